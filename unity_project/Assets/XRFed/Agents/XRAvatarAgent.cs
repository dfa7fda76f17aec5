using System;
using System.Collections.Generic;
using System.Linq;
using Unity.MLAgents;
using Unity.MLAgents.Actuators;
using Unity.MLAgents.Policies;
using Unity.MLAgents.Sensors;
using UnityEngine;
using XRFed.Codec;
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
            if (m_Scene == null)
                throw new InvalidOperationException("XRAvatarAgent '" + name + "' expected an XRFedScene in the scene, got none "
                                                    + "(build scenes with XRFed > Build Scene From Scenario...)");
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
            // Unity objects overload ==: a destroyed or missing component is "fake null", which ?? does not see.
            var lighting = GetComponentInParent<LightingController>();
            if (lighting == null) lighting = FindFirstObjectByType<LightingController>();
            string room = CurrentRoom();
            var audio = GetComponentInChildren<AudioRingBuffer>();
            var meta = new Dictionary<string, object>
            {
                { "device_id", DeviceId }, { "step", (long)StepCount }, { "sim_time_s", (double)(StepCount * m_Scene.StepDtS) },
                { "wall_time_ns", UnixTime.NowNs() }, { "room", room }, { "events", ActiveEvents().Cast<object>().ToList() },
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

        /// <summary>pose [7]: world position (x, y, z) m and orientation (w, x, y, z), head -> world, xrfed world
        /// frame (right-handed, z up; <see cref="WorldFrame"/>).</summary>
        public void FillPose(float[] v)
        {
            var t = HeadCamera.transform;
            WorldFrame.HeadPose(D(t.position), D(t.right), D(t.up), D(t.forward), v, 0);
        }

        static double[] D(Vector3 u) { return new double[] { u.x, u.y, u.z }; }

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
    }
}
