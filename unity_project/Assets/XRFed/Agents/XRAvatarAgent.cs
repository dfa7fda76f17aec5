using System;
using System.Collections.Generic;
using System.Linq;
using Unity.MLAgents;
using Unity.MLAgents.Actuators;
using Unity.MLAgents.Policies;
using Unity.MLAgents.Sensors;
using UnityEngine;
using XRFed.Scene;
using XRFed.Sensors;

namespace XRFed.Agents
{
    /// <summary>
    /// An XR avatar wearing one device: one ML-Agents agent per device, behavior "XRAvatar_&lt;profile&gt;".
    /// Its sensors carry the modalities of the device profile under the names Python maps back (rgb: a
    /// CameraSensorComponent named "rgb"; depth_m, gaze, audio, pose, imu, hands, labels, present, device: the
    /// <see cref="XRAvatarSensors"/> component). Modalities the profile lacks have no sensor; ones dropped right now
    /// (a SetModality command, a scenario modality event) are zeros with their "present" flag at 0.
    /// </summary>
    public class XRAvatarAgent : Agent
    {
        /// <summary>Modality names in bridge.tasks.MODALITIES order (the "present" vector's order).</summary>
        public static readonly string[] AllModalities = { "rgb", "depth", "gaze", "audio", "pose", "imu", "hands" };
        /// <summary>Task names in bridge.tasks.TASKS order (the "labels" vector's order).</summary>
        public static readonly string[] Tasks = { "object_recognition", "gesture_recognition", "scene_classification",
            "speech_command", "activity_recognition", "intent_prediction" };

        /// <summary>User (avatar) name from the scenario.</summary>
        public string UserId = "user0";
        /// <summary>Device profile name (bridge/data/devices.yaml).</summary>
        public string Profile = "meta_quest_3";
        /// <summary>Modalities of the profile.</summary>
        public string[] Modalities = { "rgb", "depth", "audio", "pose", "imu" };
        /// <summary>The egocentric camera (head).</summary>
        public Camera HeadCamera;
        /// <summary>Label vocabularies (class lists per task), filled by the scene builder from bridge.tasks.</summary>
        public TaskVocabulary Vocabulary;

        /// <summary>"user-profile", as the embedded scene names devices.</summary>
        public string DeviceId { get { return UserId + "-" + Profile; } }
        /// <summary>The behavior key without the team suffix.</summary>
        public string BehaviorName { get { return GetComponent<BehaviorParameters>().BehaviorName; } }
        /// <summary>Index in the scene's hello device list (the "device" observation).</summary>
        public int DeviceIndex { get; private set; }

        readonly HashSet<string> m_Disabled = new HashSet<string>();
        XRFedScene m_Scene;
        Vector3 m_LastPos, m_LastVel;
        Quaternion m_LastRot = Quaternion.identity;

        /// <summary>Whether a modality is carried this step (profile has it, nothing dropped it).</summary>
        public bool Has(string modality) { return Modalities.Contains(modality) && !m_Disabled.Contains(modality) && !EventDrops(modality); }

        /// <summary>Switch a modality off/on (Python's SetModality).</summary>
        public void SetModality(string modality, bool enabled) { if (enabled) m_Disabled.Remove(modality); else m_Disabled.Add(modality); }

        /// <inheritdoc/>
        protected override void OnEnable()
        {
            m_Scene = FindFirstObjectByType<XRFedScene>();
            DeviceIndex = m_Scene.Register(this);
            base.OnEnable();
        }

        /// <inheritdoc/>
        public override void OnEpisodeBegin()
        {
            m_Disabled.Clear();
            var runner = GetComponent<TaskScriptRunner>();
            var spec = m_Scene.Scenario == null ? null : m_Scene.Scenario.Avatars.FirstOrDefault(a => a.Name == UserId);
            if (runner != null && spec != null) runner.Play(m_Scene.Scenario, spec.Script);
        }

        /// <inheritdoc/>
        public override void CollectObservations(VectorSensor sensor)
        {
            // Sensors write the tensors; the agent reports the non-tensor frame fields of this decision.
            var lighting = GetComponentInParent<LightingController>() ?? FindFirstObjectByType<LightingController>();
            string room = CurrentRoom();
            var audio = GetComponentInChildren<AudioRingBuffer>();
            var meta = new Dictionary<string, object>
            {
                { "device_id", DeviceId }, { "step", (long)StepCount }, { "sim_time_s", (double)(StepCount * m_Scene.StepDtS) },
                { "wall_time_ns", DateTime.UtcNow.Ticks * 100L }, { "room", room }, { "events", ActiveEvents().Cast<object>().ToList() },
                { "active_tasks", ActiveTasks().Cast<object>().ToList() },
                { "lighting", null }, { "camera_fov_y_deg", HeadCamera != null ? (object)(double)HeadCamera.fieldOfView : null },
                { "audio_hz", Has("audio") && audio != null ? (object)(long)audio.SampleRateHz : null },
                { "audio_channels", Has("audio") && audio != null ? (object)(long)AudioChannels : null },
            };
            if (lighting != null && room != null)
            {
                var l = lighting.At(room);
                meta["lighting"] = new List<object> { l.Intensity, l.IlluminanceLux, l.ColorTemperatureK, l.LightsOn ? 1.0 : 0.0 };
            }
            m_Scene.ReportFrame(meta);
        }

        /// <inheritdoc/>
        public override void OnActionReceived(ActionBuffers actions)
        {
            // xrfed agents act on the scene through side-channel commands (predictions, modality switches).
        }

        /// <summary>Microphone channels sent in "audio" (device profile's microphone count, capped by the output).</summary>
        public int AudioChannels = 2;
        /// <summary>Audio frames per decision (sample rate x step).</summary>
        public int AudioSamplesPerStep { get { var a = GetComponentInChildren<AudioRingBuffer>(); return a == null ? 0 : Mathf.RoundToInt(a.SampleRateHz * m_Scene.StepDtS); } }

        /// <summary>pose [7]: world position (x, y, z) m and orientation (w, x, y, z), xrfed world frame (z up).</summary>
        public void FillPose(float[] v)
        {
            var p = HeadCamera.transform.position;
            var q = ToXrfed(HeadCamera.transform.rotation);
            v[0] = p.x; v[1] = p.z; v[2] = p.y;
            v[3] = q.w; v[4] = q.x; v[5] = q.y; v[6] = q.z;
        }

        /// <summary>imu [6]: specific force (m/s^2) and angular velocity (rad/s) in the head frame.</summary>
        public void FillImu(float[] v)
        {
            var t = HeadCamera.transform;
            float dt = Mathf.Max(Time.fixedDeltaTime, 1e-4f);
            var vel = (t.position - m_LastPos) / dt;
            var acc = (vel - m_LastVel) / dt - Physics.gravity; // specific force includes the gravity reaction
            var dq = Quaternion.Inverse(m_LastRot) * t.rotation;
            dq.ToAngleAxis(out float angleDeg, out Vector3 axis);
            var w = axis * (Mathf.Deg2Rad * (angleDeg > 180 ? angleDeg - 360 : angleDeg) / dt);
            var a = t.InverseTransformDirection(acc);
            // Unity view space (+z forward, left-handed) -> xrfed head frame (+x right, +y up, -z forward).
            v[0] = a.x; v[1] = a.y; v[2] = -a.z;
            v[3] = -w.x; v[4] = -w.y; v[5] = w.z;
            m_LastPos = t.position; m_LastVel = vel; m_LastRot = t.rotation;
        }

        /// <summary>labels [6]: class index per task, -1 = no label.</summary>
        public void FillLabels(float[] v)
        {
            var runner = GetComponent<TaskScriptRunner>();
            for (int i = 0; i < v.Length; i++) v[i] = -1;
            if (Vocabulary == null) return;
            v[0] = Vocabulary.Index(0, PointedCategory());
            v[1] = Vocabulary.Index(1, runner != null ? runner.Gesture : "none");
            var room = CurrentRoom();
            var roomSpec = room == null || m_Scene.Scenario == null ? null : m_Scene.Scenario.RoomNamed(room);
            v[2] = roomSpec == null ? -1 : Vocabulary.Index(2, roomSpec.Type);
            v[3] = Vocabulary.Index(3, runner != null ? runner.Command : "none");
            v[4] = Vocabulary.Index(4, runner != null ? runner.Activity : "idle");
            v[5] = Vocabulary.Index(5, runner != null && runner.Interact != null ? CategoryOf(runner.Interact) : "none");
        }

        /// <summary>present [10]: modality flags (MODALITIES order), gaze valid, hands valid (left, right).</summary>
        public void FillPresent(float[] v)
        {
            // Hand joints need a hand-tracking provider (XR Hands); this scene has none yet, so "hands" is never
            // flagged present: its zeros must not pose as data.
            for (int i = 0; i < AllModalities.Length; i++) v[i] = Has(AllModalities[i]) && AllModalities[i] != "hands" ? 1 : 0;
            var gaze = GetComponentInChildren<GazeProvider>();
            v[7] = gaze != null && gaze.Valid ? 1 : 0;
        }

        string PointedCategory()
        {
            var gaze = GetComponentInChildren<GazeProvider>();
            var t = HeadCamera.transform;
            var dir = t.forward;
            if (gaze != null && Has("gaze") && gaze.Valid)
                dir = t.TransformDirection(new Vector3(Mathf.Tan(gaze.Sample[0]), Mathf.Tan(gaze.Sample[1]), 1).normalized);
            RaycastHit hit;
            if (!Physics.Raycast(t.position, dir, out hit, 50f)) return "background";
            var obj = hit.collider.GetComponentInParent<XRFedObject>();
            return obj == null ? "background" : obj.Category;
        }

        string CategoryOf(string objectName)
        {
            var o = m_Scene.Scenario == null ? null : m_Scene.Scenario.Objects.FirstOrDefault(x => x.Name == objectName);
            return o == null ? "none" : o.Category;
        }

        string CurrentRoom()
        {
            if (m_Scene.Scenario == null) return null;
            var p = transform.position;
            var r = m_Scene.Scenario.Rooms.FirstOrDefault(x => p.x >= x.OriginM[0] && p.x <= x.OriginM[0] + x.SizeM[0]
                                                            && p.z >= x.OriginM[1] && p.z <= x.OriginM[1] + x.SizeM[1]);
            return r == null ? null : r.Name;
        }

        IEnumerable<string> ActiveEvents()
        {
            if (m_Scene.Scenario == null) return new string[0];
            double t = StepCount * m_Scene.StepDtS;
            return m_Scene.Scenario.ModalityEvents.Where(e => e.Avatar == UserId && e.StartS <= t && t < e.EndS).Select(e => e.Kind).OrderBy(k => k, StringComparer.Ordinal);
        }

        static readonly Dictionary<string, string> EventModality = new Dictionary<string, string>
        {
            { "mic_muted", "audio" }, { "eye_tracking_lost", "gaze" }, { "camera_occluded", "rgb" }, { "depth_lost", "depth" },
            { "hand_tracking_lost", "hands" }, { "imu_dropout", "imu" }, { "tracking_lost", "pose" },
        };

        bool EventDrops(string modality) { return ActiveEvents().Any(k => EventModality[k] == modality); }

        IEnumerable<string> ActiveTasks()
        {
            var runner = GetComponent<TaskScriptRunner>();
            return runner != null && runner.Tasks.Length > 0 ? runner.Tasks : Tasks;
        }

        static Quaternion ToXrfed(Quaternion unity)
        {
            // Unity: y up, left-handed, camera looks +z. xrfed: z up, right-handed, head looks -z (OpenXR view).
            var m = Matrix4x4.Rotate(unity);
            Vector3 right = m.GetColumn(0), up = m.GetColumn(1), fwd = m.GetColumn(2);
            Vector3 X = new Vector3(right.x, right.z, right.y), Y = new Vector3(up.x, up.z, up.y), Z = -new Vector3(fwd.x, fwd.z, fwd.y);
            float trace = X.x + Y.y + Z.z;
            float w = Mathf.Sqrt(Mathf.Max(0, 1 + trace)) / 2;
            float x = Mathf.Sqrt(Mathf.Max(0, 1 + X.x - Y.y - Z.z)) / 2 * Mathf.Sign(Y.z - Z.y);
            float y = Mathf.Sqrt(Mathf.Max(0, 1 - X.x + Y.y - Z.z)) / 2 * Mathf.Sign(Z.x - X.z);
            float z = Mathf.Sqrt(Mathf.Max(0, 1 - X.x - Y.y + Z.z)) / 2 * Mathf.Sign(X.y - Y.x);
            return new Quaternion(x, y, z, w);
        }
    }

    /// <summary>Marks a scene object with its scenario category (object_recognition ground truth).</summary>
    public class XRFedObject : MonoBehaviour
    {
        /// <summary>One of bridge.tasks.OBJECT_CATEGORIES.</summary>
        public string Category;
    }

    /// <summary>Class lists per task (bridge.tasks.TASKS order), so labels become the same indices as in Python.</summary>
    [Serializable]
    public class TaskVocabulary
    {
        /// <summary>Comma-separated classes per task.</summary>
        public string[] Classes = new string[6];

        /// <summary>Index of <paramref name="label"/> in task <paramref name="task"/>, -1 when unknown.</summary>
        public int Index(int task, string label) { return Array.IndexOf(Classes[task].Split(','), label); }
    }

    /// <summary>
    /// The avatar's named sensors besides the camera: depth_m, gaze, audio, pose, imu, hands (profile permitting),
    /// plus labels, present and device -- built from the <see cref="XRAvatarAgent"/> on the same GameObject.
    /// </summary>
    public class XRAvatarSensors : SensorComponent
    {
        /// <summary>Depth image size (pixels); keep small: float32 per pixel on the wire.</summary>
        public int DepthWidth = 84, DepthHeight = 84;

        /// <inheritdoc/>
        public override ISensor[] CreateSensors()
        {
            var a = GetComponent<XRAvatarAgent>();
            var gaze = GetComponentInChildren<GazeProvider>();
            var audio = GetComponentInChildren<AudioRingBuffer>();
            var list = new List<ISensor>
            {
                new NamedVectorSensor("device", 1, v => v[0] = a.DeviceIndex),
                new NamedVectorSensor("labels", 6, a.FillLabels),
                new NamedVectorSensor("present", 10, a.FillPresent),
            };
            if (a.Modalities.Contains("depth")) list.Add(new DepthSensor(a.HeadCamera, DepthWidth, DepthHeight));
            if (a.Modalities.Contains("gaze")) list.Add(new NamedVectorSensor("gaze", 8, v => { if (a.Has("gaze")) Array.Copy(gaze.Sample, v, 8); }));
            if (a.Modalities.Contains("pose")) list.Add(new NamedVectorSensor("pose", 7, v => { if (a.Has("pose")) a.FillPose(v); }));
            if (a.Modalities.Contains("imu")) list.Add(new NamedVectorSensor("imu", 6, v => { if (a.Has("imu")) a.FillImu(v); }));
            if (a.Modalities.Contains("hands")) list.Add(new NamedVectorSensor("hands", 156, v => { }));
            if (a.Modalities.Contains("audio") && audio != null)
            {
                int n = a.AudioSamplesPerStep;
                list.Add(new NamedVectorSensor("audio", a.AudioChannels * n, v => { if (a.Has("audio")) audio.CopyLatest(v, a.AudioChannels, n); }));
            }
            return list.ToArray();
        }
    }
}
