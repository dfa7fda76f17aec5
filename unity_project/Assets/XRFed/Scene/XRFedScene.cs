using System.Collections.Generic;
using System.Linq;
using Unity.MLAgents;
using Unity.MLAgents.SideChannels;
using UnityEngine;
using XRFed.Agents;
using XRFed.Codec;
using XRFed.SideChannels;

namespace XRFed.Scene
{
    /// <summary>
    /// The scene root: owns the xrfed side channel, the scenario, the device list and the commands from Python.
    /// On every reset it announces the devices ("hello"); agents report their frame metadata ("frames") while they
    /// collect observations; prediction overlays are acknowledged ("overlay_shown") so Python measures the round
    /// trip frame -> prediction -> scene.
    /// </summary>
    public class XRFedScene : MonoBehaviour
    {
        /// <summary>Scenario JSON (as written by `xrfed player --export-scenario`); a load_scenario message replaces it.</summary>
        public TextAsset ScenarioJson;
        /// <summary>Seconds per decision (must match the avatars' DecisionRequester period x fixed delta time).</summary>
        public float StepDtS = 0.1f;

        /// <summary>The scenario in force (null until loaded).</summary>
        public ScenarioModel Scenario { get; private set; }
        /// <summary>Seed Python asked for at the last reset.</summary>
        public long Seed { get; private set; }
        /// <summary>Decisions since the last reset.</summary>
        public int SceneStep { get; private set; }

        XrfedSideChannel m_Channel;
        readonly List<XRAvatarAgent> m_Agents = new List<XRAvatarAgent>();
        LightingController m_Lighting;

        void Awake()
        {
            m_Channel = new XrfedSideChannel();
            m_Channel.MessageReceived += OnMessage;
            SideChannelManager.RegisterSideChannel(m_Channel);
            if (ScenarioJson != null)
                Scenario = ScenarioModel.FromJson((IDictionary<string, object>)CanonicalJson.Parse(ScenarioJson.text));
            m_Lighting = GetComponent<LightingController>();
            Academy.Instance.OnEnvironmentReset += OnReset;
            Academy.Instance.AgentPreStep += _ => SceneStep++;
        }

        void OnDestroy()
        {
            if (Academy.IsInitialized)
            {
                SideChannelManager.UnregisterSideChannel(m_Channel);
                Academy.Instance.OnEnvironmentReset -= OnReset;
            }
        }

        /// <summary>Called by each avatar on enable; its index in this list is its "device" observation.</summary>
        public int Register(XRAvatarAgent agent)
        {
            if (!m_Agents.Contains(agent)) m_Agents.Add(agent);
            return m_Agents.IndexOf(agent);
        }

        void OnReset()
        {
            SceneStep = 0;
            if (m_Lighting != null && Scenario != null) m_Lighting.Load(Scenario);
            var devices = m_Agents.Select(a => (object)new Dictionary<string, object>
            {
                { "device_id", a.DeviceId }, { "user_id", a.UserId }, { "profile", a.Profile }, { "behavior", a.BehaviorName },
            }).ToList();
            m_Channel.Send(new XrfedMessage("hello", new Dictionary<string, object>
            {
                { "scene", Scenario != null ? Scenario.Name : gameObject.scene.name }, { "player", "unity/" + Application.unityVersion },
                { "step_dt_s", (double)StepDtS }, { "devices", devices },
            }));
        }

        /// <summary>An avatar's non-tensor frame fields for this decision (sent with the same exchange).</summary>
        public void ReportFrame(Dictionary<string, object> meta)
        {
            m_Channel.Send(new XrfedMessage("frames", new Dictionary<string, object> { { "frames", new List<object> { meta } } }));
        }

        void OnMessage(XrfedMessage m)
        {
            switch (m.Type)
            {
                case "reset":
                    Seed = m.Int("seed") ?? 0;
                    Random.InitState((int)Seed);
                    break;
                case "load_scenario":
                    Scenario = ScenarioModel.FromJson((IDictionary<string, object>)m.Values["scenario"]);
                    if (m_Lighting != null) m_Lighting.Load(Scenario);
                    break;
                case "set_modality":
                    foreach (var a in m_Agents.Where(a => a.DeviceId == m.Str("device_id")))
                        a.SetModality(m.Str("modality"), (bool)m.Values["enabled"]);
                    break;
                case "set_script":
                    foreach (var a in m_Agents.Where(a => a.UserId == m.Str("avatar")))
                        a.GetComponent<TaskScriptRunner>().Play(Scenario, m.Str("script"));
                    break;
                case "show_prediction":
                    foreach (var a in m_Agents.Where(a => a.DeviceId == m.Str("device_id")))
                    {
                        var overlay = a.GetComponentInChildren<PredictionOverlay>();
                        if (overlay != null) overlay.Show(m.Str("task"), m.Str("label"), m.Num("confidence"));
                    }
                    m_Channel.Send(new XrfedMessage("overlay_shown", new Dictionary<string, object>
                    {
                        { "device_id", m.Str("device_id") }, { "task", m.Str("task") }, { "label", m.Str("label") },
                        { "frame_step", m.Values["frame_step"] }, { "sent_ns", m.Values["sent_ns"] }, { "scene_step", (long)SceneStep },
                    }));
                    break;
                default:
                    m_Channel.Send(new XrfedMessage("event", new Dictionary<string, object>
                        { { "name", "unexpected" }, { "detail", m.Type + " is a scene-to-Python message" } }));
                    break;
            }
        }
    }
}
