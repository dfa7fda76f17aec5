using System.Collections.Generic;
using System.IO;
using System.Linq;
using Unity.MLAgents;
using Unity.MLAgents.Policies;
using Unity.MLAgents.Sensors;
using UnityEditor;
using UnityEditor.SceneManagement;
using UnityEngine;
using XRFed.Agents;
using XRFed.Codec;
using XRFed.Scene;
using XRFed.Sensors;

namespace XRFed.Editor
{
    /// <summary>
    /// Menu "XRFed > Build Scene From Scenario...": reads a scenario JSON (`xrfed player SCENARIO --export-scenario
    /// FILE`) and builds the scene -- rooms, objects, lights, one avatar per scenario avatar with its camera,
    /// sensors, agent and overlay -- so nobody writes scene YAML by hand. Coordinates: xrfed's world is z up,
    /// Unity's y up; room (x, y) maps to Unity (x, z).
    /// </summary>
    public static class ScenarioSceneBuilder
    {
        /// <summary>Where the depth sensor's replacement shader lives in this project.</summary>
        public const string DepthShaderPath = "Assets/XRFed/Shaders/LinearDepth.shader";

        /// <summary>Ask for a scenario JSON and build its scene.</summary>
        [MenuItem("XRFed/Build Scene From Scenario...")]
        public static void BuildFromMenu()
        {
            string path = EditorUtility.OpenFilePanel("Scenario JSON (xrfed player --export-scenario)", Application.dataPath, "json");
            if (string.IsNullOrEmpty(path)) return;
            Build(path);
        }

        /// <summary>Build and save Assets/Scenes/&lt;scenario&gt;.unity from a scenario JSON file.</summary>
        public static void Build(string jsonPath)
        {
            string text = File.ReadAllText(jsonPath);
            var root = (IDictionary<string, object>)CanonicalJson.Parse(text);
            var scenario = ScenarioModel.FromJson((IDictionary<string, object>)root["scenario"]);
            var devices = (IDictionary<string, object>)root["devices"];
            var vocab = ((List<object>)root["task_classes"]).Cast<string>().ToArray();
            var scene = EditorSceneManager.NewScene(NewSceneSetup.EmptyScene, NewSceneMode.Single);
            Directory.CreateDirectory("Assets/Scenes");
            string asset = "Assets/Scenes/" + scenario.Name + ".json";
            File.WriteAllText(asset, CanonicalJson.Write(root["scenario"]));
            AssetDatabase.ImportAsset(asset);

            var rootGo = new GameObject("XRFedScene");
            var lighting = rootGo.AddComponent<LightingController>();
            var xrScene = rootGo.AddComponent<XRFedScene>();
            xrScene.ScenarioJson = AssetDatabase.LoadAssetAtPath<TextAsset>(asset);
            xrScene.StepDtS = (float)scenario.StepDtS;
            Time.fixedDeltaTime = xrScene.StepDtS;

            foreach (var r in scenario.Rooms)
            {
                var room = new GameObject("room_" + r.Name).transform;
                room.position = new Vector3((float)r.OriginM[0], 0, (float)r.OriginM[1]);
                var floor = GameObject.CreatePrimitive(PrimitiveType.Cube);
                floor.name = "floor";
                floor.transform.SetParent(room, false);
                floor.transform.localPosition = new Vector3((float)r.SizeM[0] / 2, -0.05f, (float)r.SizeM[1] / 2);
                floor.transform.localScale = new Vector3((float)r.SizeM[0], 0.1f, (float)r.SizeM[1]);
                Wall(room, "wall_south", r.SizeM[0] / 2, 0, r.SizeM[0], 0.1, r.SizeM[2]);
                Wall(room, "wall_north", r.SizeM[0] / 2, r.SizeM[1], r.SizeM[0], 0.1, r.SizeM[2]);
                Wall(room, "wall_west", 0, r.SizeM[1] / 2, 0.1, r.SizeM[1], r.SizeM[2]);
                Wall(room, "wall_east", r.SizeM[0], r.SizeM[1] / 2, 0.1, r.SizeM[1], r.SizeM[2]);
            }
            foreach (var o in scenario.Objects)
            {
                var r = scenario.RoomNamed(o.Room);
                var size = o.SizeM ?? new[] { 0.5, 0.5, 0.8 };
                var go = GameObject.CreatePrimitive(o.Category == "lamp" || o.Category == "mug" || o.Category == "plant" ? PrimitiveType.Cylinder : PrimitiveType.Cube);
                go.name = o.Name;
                double z0 = o.PosM.Length == 3 ? o.PosM[2] : 0;
                go.transform.position = new Vector3((float)(r.OriginM[0] + o.PosM[0]), (float)(z0 + size[2] / 2), (float)(r.OriginM[1] + o.PosM[1]));
                go.transform.rotation = Quaternion.Euler(0, -(float)o.YawDeg, 0);
                go.transform.localScale = new Vector3((float)size[0], (float)size[2], (float)size[1]);
                go.AddComponent<XRFedObject>().Category = o.Category;
            }
            foreach (var l in scenario.Lights)
            {
                var r = scenario.RoomNamed(l.Room);
                var go = new GameObject(l.Name);
                go.transform.position = new Vector3((float)(r.OriginM[0] + l.PosM[0]), (float)l.PosM[2], (float)(r.OriginM[1] + l.PosM[1]));
                var light = go.AddComponent<Light>();
                light.type = LightType.Point;
                light.range = 8;
                var xl = go.AddComponent<XRFedLight>();
                xl.Room = l.Room;
                xl.Intensity = l.Intensity;
            }
            foreach (var a in scenario.Avatars) Avatar(scenario, a, (IDictionary<string, object>)devices[a.Device], vocab);
            EditorSceneManager.SaveScene(scene, "Assets/Scenes/" + scenario.Name + ".unity");
            Debug.Log("XRFed: built Assets/Scenes/" + scenario.Name + ".unity from " + jsonPath);
        }

        static void Wall(Transform room, string name, double x, double y, double sx, double sy, double h)
        {
            var w = GameObject.CreatePrimitive(PrimitiveType.Cube);
            w.name = name;
            w.transform.SetParent(room, false);
            w.transform.localPosition = new Vector3((float)x, (float)h / 2, (float)y);
            w.transform.localScale = new Vector3((float)sx, (float)h, (float)sy);
        }

        static void Avatar(ScenarioModel scenario, AvatarSpec spec, IDictionary<string, object> device, string[] vocab)
        {
            var r = scenario.RoomNamed(spec.StartRoom);
            var body = new GameObject(spec.Name);
            body.SetActive(false); // configure everything before the Agent's OnEnable
            body.transform.position = new Vector3((float)(r.OriginM[0] + spec.StartPosM[0]), 0, (float)(r.OriginM[1] + spec.StartPosM[1]));
            body.transform.rotation = Quaternion.Euler(0, 90 - (float)spec.StartYawDeg, 0);
            var head = new GameObject("head");
            head.transform.SetParent(body.transform, false);
            head.transform.localPosition = new Vector3(0, 0.93f * (float)spec.User.HeightM, 0);
            var cam = head.AddComponent<Camera>();
            cam.fieldOfView = System.Convert.ToSingle(device["fov_v_deg"]);
            head.AddComponent<AudioListener>();
            head.AddComponent<AudioRingBuffer>();
            var gaze = head.AddComponent<GazeProvider>();
            gaze.Head = head.transform;
            gaze.BiasDeg = new Vector2((float)spec.User.GazeBiasDeg[0], (float)spec.User.GazeBiasDeg[1]);
            new GameObject("overlay").AddComponent<PredictionOverlay>().transform.SetParent(head.transform, false);

            var modalities = ((List<object>)device["modalities"]).Cast<string>().ToArray();
            var bp = body.AddComponent<BehaviorParameters>();
            bp.BehaviorName = "XRAvatar_" + spec.Device;
            bp.BrainParameters.VectorObservationSize = 0;
            bp.BehaviorType = BehaviorType.Default;
            var agent = body.AddComponent<XRAvatarAgent>();
            agent.UserId = spec.Name;
            agent.Profile = spec.Device;
            agent.Modalities = modalities;
            agent.HeadCamera = cam;
            agent.AudioChannels = System.Convert.ToInt32(device["mics"]);
            agent.Vocabulary = new TaskVocabulary { Classes = vocab };
            var runner = body.AddComponent<TaskScriptRunner>();
            runner.Head = head.transform;
            var requester = body.AddComponent<DecisionRequester>();
            requester.DecisionPeriod = 1;
            int size = (int)scenario.Render.WidthPx;
            if (modalities.Contains("rgb"))
            {
                var rgb = body.AddComponent<CameraSensorComponent>();
                rgb.Camera = cam;
                rgb.SensorName = "rgb";
                rgb.Width = size;
                rgb.Height = (int)scenario.Render.HeightPx;
                rgb.CompressionType = SensorCompressionType.PNG;
                // The sensor's camera stays enabled: it is the avatar's view in the Game view (and the overlay's).
                rgb.RuntimeCameraEnable = true;
            }
            var sensors = body.AddComponent<XRAvatarSensors>();
            sensors.DepthWidth = size;
            sensors.DepthHeight = (int)scenario.Render.HeightPx;
            // A serialized reference keeps the shader in player builds (Shader.Find alone does not).
            sensors.DepthShader = AssetDatabase.LoadAssetAtPath<Shader>(DepthShaderPath);
            if (sensors.DepthShader == null) sensors.DepthShader = Shader.Find(DepthSensor.ShaderName);
            if (sensors.DepthShader == null)
                throw new FileNotFoundException("expected the " + DepthSensor.ShaderName + " shader at " + DepthShaderPath + ", found none");
            body.SetActive(true);
        }
    }
}
