using System;
using System.Collections.Generic;
using Unity.MLAgents;
using UnityEngine;
using XRFed.Codec;

namespace XRFed.Scene
{
    /// <summary>
    /// Drives every <see cref="XRFedLight"/> from the scenario's lighting schedule (the same evaluation as the
    /// embedded scene: <see cref="LightingSchedule"/>), with overrides from Python's EnvironmentParametersChannel
    /// floats "xrfed.lighting.{intensity|color_temperature_k|lights_on}[@room]".
    /// </summary>
    public class LightingController : MonoBehaviour
    {
        /// <summary>Lux that maps to a Unity light intensity of 1.</summary>
        public float LuxPerUnityIntensity = 300f;

        LightingSchedule m_Schedule;
        ScenarioModel m_Scenario;
        float m_StartTime;

        /// <summary>The current scenario's schedule; called on every reset.</summary>
        public void Load(ScenarioModel scenario)
        {
            m_Scenario = scenario;
            m_Schedule = new LightingSchedule(scenario);
            m_StartTime = Time.fixedTime;
            var parameters = Academy.Instance.EnvironmentParameters;
            var rooms = new List<string> { null };
            foreach (var r in scenario.Rooms) rooms.Add(r.Name);
            foreach (var room in rooms)
                foreach (var field in new[] { "intensity", "color_temperature_k", "lights_on" })
                {
                    string key = "xrfed.lighting." + field + (room == null ? "" : "@" + room);
                    string f = field, rm = room;
                    parameters.RegisterCallback(key, v => m_Schedule.SetOverride(rm, f, v));
                }
        }

        /// <summary>The lighting of a room now (for frame metadata).</summary>
        public RoomLight At(string room) { return m_Schedule.At(room, Time.fixedTime - m_StartTime); }

        void FixedUpdate()
        {
            if (m_Schedule == null) return;
            foreach (var light in FindObjectsByType<XRFedLight>(FindObjectsSortMode.None))
            {
                var l = At(light.Room);
                var unity = light.GetComponent<Light>();
                unity.enabled = l.LightsOn;
                unity.intensity = (float)(light.Intensity * l.Intensity);
                unity.color = CctToRgb(l.ColorTemperatureK);
            }
        }

        /// <summary>Black-body colour of a temperature (Tanner Helland's fit, as the embedded scene).</summary>
        public static Color CctToRgb(double kelvin)
        {
            double t = kelvin / 100.0;
            double r = t <= 66 ? 255.0 : 329.698727446 * Math.Pow(t - 60, -0.1332047592);
            double g = t <= 66 ? 99.4708025861 * Math.Log(t) - 161.1195681661 : 288.1221695283 * Math.Pow(t - 60, -0.0755148492);
            double b = t >= 66 ? 255.0 : (t <= 19 ? 0.0 : 138.5177312231 * Math.Log(t - 10) - 305.0447927307);
            r = Math.Min(Math.Max(r / 255, 0), 1); g = Math.Min(Math.Max(g / 255, 0), 1); b = Math.Min(Math.Max(b / 255, 0), 1);
            double max = Math.Max(r, Math.Max(g, b));
            return new Color((float)(r / max), (float)(g / max), (float)(b / max));
        }
    }
}
