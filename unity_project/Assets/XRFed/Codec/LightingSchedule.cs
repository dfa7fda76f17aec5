// Lighting schedule evaluation, a line-for-line port of bridge/embedded/lighting.py (LightingSchedule.at), so the
// Unity scene and the embedded scene light a room identically at every time. No UnityEngine.
using System;
using System.Collections.Generic;
using System.Linq;

namespace XRFed.Codec
{
    /// <summary>Lighting of one room at one time (effective intensity after flicker and on/off).</summary>
    public struct RoomLight
    {
        public double Intensity, ColorTemperatureK, IlluminanceLux; public bool LightsOn;
    }

    /// <summary>Evaluates a scenario's keyframes per room, with SetLighting overrides on top.</summary>
    public sealed class LightingSchedule
    {
        /// <summary>Light that leaks in when the lamps are off (lux), as in the embedded scene.</summary>
        public const double AmbientLux = 2.0;

        static readonly Dictionary<string, double> NominalLux = new Dictionary<string, double>
        {
            { "living_room", 200.0 }, { "kitchen", 300.0 }, { "bedroom", 120.0 }, { "office", 400.0 }, { "factory_floor", 500.0 },
            { "warehouse", 300.0 }, { "clinic_exam", 1000.0 }, { "clinic_ward", 300.0 },
        };

        readonly Dictionary<string, Room> rooms = new Dictionary<string, Room>();
        readonly Dictionary<string, LightingKeyframe[]> frames = new Dictionary<string, LightingKeyframe[]>();
        readonly Dictionary<string, Dictionary<string, double>> overrides = new Dictionary<string, Dictionary<string, double>>();
        const string AllRooms = "\u0000all";

        /// <summary>Index the schedule of <paramref name="scenario"/> by room.</summary>
        public LightingSchedule(ScenarioModel scenario)
        {
            foreach (var r in scenario.Rooms)
            {
                rooms[r.Name] = r;
                frames[r.Name] = scenario.LightingSchedule.Where(k => k.Rooms.Length == 0 || k.Rooms.Contains(r.Name)).ToArray();
            }
        }

        /// <summary>Override intensity / color_temperature_k / lights_on (1 or 0) for a room (null = every room).</summary>
        public void SetOverride(string room, string field, double value)
        {
            var key = room ?? AllRooms;
            if (!overrides.ContainsKey(key)) overrides[key] = new Dictionary<string, double>();
            overrides[key][field] = value;
        }

        /// <summary>The room's lighting at <paramref name="tS"/> seconds.</summary>
        public RoomLight At(string room, double tS)
        {
            var r = rooms[room];
            var fr = frames[room];
            double intensity, cct, flickerHz, depth;
            bool off;
            if (fr.Length == 0)
            {
                intensity = 1.0; cct = 4000.0; off = false; flickerHz = 0.0; depth = 0.0;
            }
            else
            {
                var prev = fr.Where(k => k.TS <= tS).ToArray();
                var next = fr.Where(k => k.TS > tS).ToArray();
                var a = prev.Length > 0 ? prev[prev.Length - 1] : fr[0];
                if (next.Length > 0 && prev.Length > 0)
                {
                    var b = next[0];
                    double w = (tS - a.TS) / (b.TS - a.TS);
                    intensity = a.Intensity + w * (b.Intensity - a.Intensity);
                    cct = a.ColorTemperatureK + w * (b.ColorTemperatureK - a.ColorTemperatureK);
                }
                else
                {
                    intensity = a.Intensity; cct = a.ColorTemperatureK;
                }
                off = a.LightsOff; flickerHz = a.FlickerHz; depth = a.FlickerDepth;
            }
            foreach (var key in new[] { AllRooms, room })
            {
                Dictionary<string, double> ov;
                if (!overrides.TryGetValue(key, out ov)) continue;
                double v;
                if (ov.TryGetValue("intensity", out v)) intensity = v;
                if (ov.TryGetValue("color_temperature_k", out v)) cct = v;
                if (ov.TryGetValue("lights_on", out v)) off = v < 0.5;
            }
            if (flickerHz > 0)
            {
                // A failing lamp: sharp dips at flicker_hz, as fluorescent tubes do.
                double phase = Math.Sin(2 * Math.PI * flickerHz * tS);
                intensity *= 1.0 - depth * (phase < -0.3 ? 1.0 : 0.0);
            }
            double eff = off ? 0.0 : intensity;
            double lux = r.NominalLux.HasValue ? r.NominalLux.Value : NominalLux[r.Type];
            return new RoomLight { Intensity = eff, ColorTemperatureK = cct, LightsOn = !off, IlluminanceLux = lux * eff + AmbientLux };
        }
    }
}
