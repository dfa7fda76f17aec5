// The scenario model, field for field as bridge/scenario.py validates it and bridge/unity/codec.py
// scenario_to_dict sends it (load_scenario). No UnityEngine: the scene builder, the lighting controller and the
// task-script runner read these plain objects; the codec test proves ToJson() reproduces Python's bytes.
using System;
using System.Collections.Generic;
using System.Linq;

namespace XRFed.Codec
{
    /// <summary>Typed readers over parsed JSON objects; every missing or mistyped key throws naming the path.</summary>
    internal static class J
    {
        public static object Get(IDictionary<string, object> d, string k, string path)
        {
            object v;
            if (!d.TryGetValue(k, out v)) throw new FormatException("scenario field '" + path + "." + k + "' is missing");
            return v;
        }
        public static double D(IDictionary<string, object> d, string k, string p) { return Convert.ToDouble(Get(d, k, p)); }
        public static double? ND(IDictionary<string, object> d, string k, string p) { var v = Get(d, k, p); return v == null ? (double?)null : Convert.ToDouble(v); }
        public static long L(IDictionary<string, object> d, string k, string p) { return Convert.ToInt64(Get(d, k, p)); }
        public static string S(IDictionary<string, object> d, string k, string p) { return (string)Get(d, k, p); }
        public static bool B(IDictionary<string, object> d, string k, string p) { return (bool)Get(d, k, p); }
        public static IDictionary<string, object> O(IDictionary<string, object> d, string k, string p) { return (IDictionary<string, object>)Get(d, k, p); }
        public static List<object> A(IDictionary<string, object> d, string k, string p) { return (List<object>)Get(d, k, p); }
        public static double[] DA(IDictionary<string, object> d, string k, string p) { var a = Get(d, k, p) as List<object>; return a == null ? null : a.Select(Convert.ToDouble).ToArray(); }
        public static string[] SA(IDictionary<string, object> d, string k, string p) { return A(d, k, p).Cast<string>().ToArray(); }
        public static List<object> W(double[] a) { return a == null ? null : a.Select(x => (object)x).ToList(); }
        public static List<object> W(string[] a) { return a.Select(x => (object)x).ToList(); }
        public static object N(double? x) { return x.HasValue ? (object)x.Value : null; }
    }

    /// <summary>Render settings (pixels; the embedded scene's renderer options).</summary>
    public sealed class RenderSettings
    {
        public long WidthPx, HeightPx; public bool Shadows, Reflections, Segmentation; public string Gl;
        public static RenderSettings FromJson(IDictionary<string, object> d, string p)
        {
            return new RenderSettings { WidthPx = J.L(d, "width_px", p), HeightPx = J.L(d, "height_px", p), Shadows = J.B(d, "shadows", p),
                Reflections = J.B(d, "reflections", p), Segmentation = J.B(d, "segmentation", p), Gl = J.S(d, "gl", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "width_px", WidthPx }, { "height_px", HeightPx }, { "shadows", Shadows },
                { "reflections", Reflections }, { "segmentation", Segmentation }, { "gl", Gl } };
        }
    }

    /// <summary>A room: origin (world x, y of its min corner) and size (x, y, height) in metres, world z up.</summary>
    public sealed class Room
    {
        public string Name, Type, Walls, Floor, Ceiling; public double[] OriginM, SizeM; public string[] Doors; public double? Rt60S, NominalLux;
        public static Room FromJson(IDictionary<string, object> d, string p)
        {
            return new Room { Name = J.S(d, "name", p), Type = J.S(d, "type", p), OriginM = J.DA(d, "origin_m", p), SizeM = J.DA(d, "size_m", p),
                Walls = J.S(d, "walls", p), Floor = J.S(d, "floor", p), Ceiling = J.S(d, "ceiling", p), Doors = J.SA(d, "doors", p),
                Rt60S = J.ND(d, "rt60_s", p), NominalLux = J.ND(d, "nominal_lux", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "name", Name }, { "type", Type }, { "origin_m", J.W(OriginM) }, { "size_m", J.W(SizeM) },
                { "walls", Walls }, { "floor", Floor }, { "ceiling", Ceiling }, { "doors", J.W(Doors) }, { "rt60_s", J.N(Rt60S) }, { "nominal_lux", J.N(NominalLux) } };
        }
    }

    /// <summary>A sound source attached to an object (hum or alarm; level in dB SPL at 1 m).</summary>
    public sealed class SoundSpec
    {
        public string Kind; public double LevelDb, OnS, OffS; public double? FreqHz;
        public static SoundSpec FromJson(IDictionary<string, object> d, string p)
        {
            return d == null ? null : new SoundSpec { Kind = J.S(d, "kind", p), LevelDb = J.D(d, "level_db", p), FreqHz = J.ND(d, "freq_hz", p),
                OnS = J.D(d, "on_s", p), OffS = J.D(d, "off_s", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "kind", Kind }, { "level_db", LevelDb }, { "freq_hz", J.N(FreqHz) }, { "on_s", OnS }, { "off_s", OffS } };
        }
    }

    /// <summary>An object; positions in room coordinates (metres from the room's min corner), yaw in degrees about +z.</summary>
    public sealed class SceneObject
    {
        public string Name, Category, Room; public double[] PosM, SizeM, Color; public double YawDeg; public SoundSpec Sound;
        public static SceneObject FromJson(IDictionary<string, object> d, string p)
        {
            return new SceneObject { Name = J.S(d, "name", p), Category = J.S(d, "category", p), Room = J.S(d, "room", p), PosM = J.DA(d, "pos_m", p),
                YawDeg = J.D(d, "yaw_deg", p), SizeM = J.DA(d, "size_m", p), Color = J.DA(d, "color", p),
                Sound = SoundSpec.FromJson(J.Get(d, "sound", p) as IDictionary<string, object>, p + ".sound") };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "name", Name }, { "category", Category }, { "room", Room }, { "pos_m", J.W(PosM) },
                { "yaw_deg", YawDeg }, { "size_m", J.W(SizeM) }, { "color", J.W(Color) }, { "sound", Sound == null ? null : Sound.ToJson() } };
        }
    }

    /// <summary>A ceiling light (room coordinates, relative intensity).</summary>
    public sealed class LightSpec
    {
        public string Name, Room; public double[] PosM; public double Intensity;
        public static LightSpec FromJson(IDictionary<string, object> d, string p)
        {
            return new LightSpec { Name = J.S(d, "name", p), Room = J.S(d, "room", p), PosM = J.DA(d, "pos_m", p), Intensity = J.D(d, "intensity", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "name", Name }, { "room", Room }, { "pos_m", J.W(PosM) }, { "intensity", Intensity } };
        }
    }

    /// <summary>Lighting at time t_s; intensity and colour temperature interpolate linearly between keyframes.</summary>
    public sealed class LightingKeyframe
    {
        public double TS, Intensity, ColorTemperatureK, FlickerHz, FlickerDepth; public bool LightsOff; public string[] Rooms;
        public static LightingKeyframe FromJson(IDictionary<string, object> d, string p)
        {
            return new LightingKeyframe { TS = J.D(d, "t_s", p), Intensity = J.D(d, "intensity", p), ColorTemperatureK = J.D(d, "color_temperature_k", p),
                LightsOff = J.B(d, "lights_off", p), FlickerHz = J.D(d, "flicker_hz", p), FlickerDepth = J.D(d, "flicker_depth", p), Rooms = J.SA(d, "rooms", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "t_s", TS }, { "intensity", Intensity }, { "color_temperature_k", ColorTemperatureK },
                { "lights_off", LightsOff }, { "flicker_hz", FlickerHz }, { "flicker_depth", FlickerDepth }, { "rooms", J.W(Rooms) } };
        }
    }

    /// <summary>A user's personal signature (gaze bias in degrees, voice, gait, body).</summary>
    public sealed class UserTraits
    {
        public double[] GazeBiasDeg; public double VoicePitchHz, SpeechRateWpm, GaitSpeedMps, HeightM, BlinkRatePerMin, HandScale; public string Handedness;
        public static UserTraits FromJson(IDictionary<string, object> d, string p)
        {
            return new UserTraits { GazeBiasDeg = J.DA(d, "gaze_bias_deg", p), VoicePitchHz = J.D(d, "voice_pitch_hz", p), SpeechRateWpm = J.D(d, "speech_rate_wpm", p),
                GaitSpeedMps = J.D(d, "gait_speed_mps", p), Handedness = J.S(d, "handedness", p), HeightM = J.D(d, "height_m", p),
                BlinkRatePerMin = J.D(d, "blink_rate_per_min", p), HandScale = J.D(d, "hand_scale", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "gaze_bias_deg", J.W(GazeBiasDeg) }, { "voice_pitch_hz", VoicePitchHz }, { "speech_rate_wpm", SpeechRateWpm },
                { "gait_speed_mps", GaitSpeedMps }, { "handedness", Handedness }, { "height_m", HeightM }, { "blink_rate_per_min", BlinkRatePerMin }, { "hand_scale", HandScale } };
        }
    }

    /// <summary>One timeline segment of a task script.</summary>
    public sealed class Segment
    {
        public double DurationS; public string Activity, Room, Interact; public double[][] Waypoints; public string[] LookAt, Gestures, Commands, Tasks;
        public static Segment FromJson(IDictionary<string, object> d, string p)
        {
            return new Segment { DurationS = J.D(d, "duration_s", p), Activity = J.S(d, "activity", p), Room = J.S(d, "room", p),
                Waypoints = J.A(d, "waypoints", p).Cast<List<object>>().Select(w => w.Select(Convert.ToDouble).ToArray()).ToArray(),
                LookAt = J.SA(d, "look_at", p), Gestures = J.SA(d, "gestures", p), Commands = J.SA(d, "commands", p),
                Interact = J.S(d, "interact", p), Tasks = J.SA(d, "tasks", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "duration_s", DurationS }, { "activity", Activity }, { "room", Room },
                { "waypoints", Waypoints.Select(w => (object)J.W(w)).ToList() }, { "look_at", J.W(LookAt) }, { "gestures", J.W(Gestures) },
                { "commands", J.W(Commands) }, { "interact", Interact }, { "tasks", J.W(Tasks) } };
        }
    }

    /// <summary>Segments generated from the seed (rooms, durations, gestures, commands).</summary>
    public sealed class RandomScript
    {
        public string[] Rooms, Commands, Gestures, Activities, Tasks; public double[] SegmentS; public double GestureProb, CommandRatePerMin;
        public static RandomScript FromJson(IDictionary<string, object> d, string p)
        {
            return d == null ? null : new RandomScript { Rooms = J.SA(d, "rooms", p), SegmentS = J.DA(d, "segment_s", p), GestureProb = J.D(d, "gesture_prob", p),
                CommandRatePerMin = J.D(d, "command_rate_per_min", p), Commands = J.SA(d, "commands", p), Gestures = J.SA(d, "gestures", p),
                Activities = J.SA(d, "activities", p), Tasks = J.SA(d, "tasks", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "rooms", J.W(Rooms) }, { "segment_s", J.W(SegmentS) }, { "gesture_prob", GestureProb },
                { "command_rate_per_min", CommandRatePerMin }, { "commands", J.W(Commands) }, { "gestures", J.W(Gestures) },
                { "activities", J.W(Activities) }, { "tasks", J.W(Tasks) } };
        }
    }

    /// <summary>A named task script: fixed segments and/or a random generator, looping or not.</summary>
    public sealed class TaskScript
    {
        public string Name; public Segment[] Segments; public RandomScript Random; public bool Loop;
        public static TaskScript FromJson(IDictionary<string, object> d, string p)
        {
            return new TaskScript { Name = J.S(d, "name", p), Segments = J.A(d, "segments", p).Select((s, i) => Segment.FromJson((IDictionary<string, object>)s, p + ".segments[" + i + "]")).ToArray(),
                Random = RandomScript.FromJson(J.Get(d, "random", p) as IDictionary<string, object>, p + ".random"), Loop = J.B(d, "loop", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "name", Name }, { "segments", Segments.Select(s => (object)s.ToJson()).ToList() },
                { "random", Random == null ? null : Random.ToJson() }, { "loop", Loop } };
        }
    }

    /// <summary>An avatar: who wears which device profile, where it starts, which task script it follows.</summary>
    public sealed class AvatarSpec
    {
        public string Name, Device, StartRoom, Script; public double[] StartPosM; public double StartYawDeg; public UserTraits User;
        public static AvatarSpec FromJson(IDictionary<string, object> d, string p)
        {
            return new AvatarSpec { Name = J.S(d, "name", p), Device = J.S(d, "device", p), StartRoom = J.S(d, "start_room", p),
                StartPosM = J.DA(d, "start_pos_m", p), StartYawDeg = J.D(d, "start_yaw_deg", p), Script = J.S(d, "script", p),
                User = UserTraits.FromJson(J.O(d, "user", p), p + ".user") };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "name", Name }, { "device", Device }, { "start_room", StartRoom }, { "start_pos_m", J.W(StartPosM) },
                { "start_yaw_deg", StartYawDeg }, { "script", Script }, { "user", User.ToJson() } };
        }
    }

    /// <summary>A modality event (mic muted, eye tracking lost, ...) for one avatar between two times.</summary>
    public sealed class ModalityEvent
    {
        public string Avatar, Kind; public double StartS, EndS;
        public static ModalityEvent FromJson(IDictionary<string, object> d, string p)
        {
            return new ModalityEvent { Avatar = J.S(d, "avatar", p), Kind = J.S(d, "kind", p), StartS = J.D(d, "start_s", p), EndS = J.D(d, "end_s", p) };
        }
        public Dictionary<string, object> ToJson()
        {
            return new Dictionary<string, object> { { "avatar", Avatar }, { "kind", Kind }, { "start_s", StartS }, { "end_s", EndS } };
        }
    }

    /// <summary>A whole scenario, as the load_scenario message carries it.</summary>
    public sealed class ScenarioModel
    {
        public string Name, Description; public double StepHz, RadioRangeM; public long AudioHz; public RenderSettings Render;
        public Room[] Rooms; public SceneObject[] Objects; public LightSpec[] Lights; public LightingKeyframe[] LightingSchedule;
        public AvatarSpec[] Avatars; public SortedDictionary<string, TaskScript> TaskScripts; public ModalityEvent[] ModalityEvents;

        /// <summary>Seconds per step.</summary>
        public double StepDtS { get { return 1.0 / StepHz; } }

        /// <summary>Read the scenario object of a load_scenario message.</summary>
        public static ScenarioModel FromJson(IDictionary<string, object> d)
        {
            const string p = "scenario";
            var scripts = new SortedDictionary<string, TaskScript>(StringComparer.Ordinal);
            foreach (var kv in J.O(d, "task_scripts", p)) scripts[kv.Key] = TaskScript.FromJson((IDictionary<string, object>)kv.Value, "task_scripts." + kv.Key);
            return new ScenarioModel
            {
                Name = J.S(d, "name", p), Description = J.S(d, "description", p), StepHz = J.D(d, "step_hz", p), AudioHz = J.L(d, "audio_hz", p),
                Render = RenderSettings.FromJson(J.O(d, "render", p), "render"),
                Rooms = J.A(d, "rooms", p).Select((x, i) => Room.FromJson((IDictionary<string, object>)x, "rooms[" + i + "]")).ToArray(),
                Objects = J.A(d, "objects", p).Select((x, i) => SceneObject.FromJson((IDictionary<string, object>)x, "objects[" + i + "]")).ToArray(),
                Lights = J.A(d, "lights", p).Select((x, i) => LightSpec.FromJson((IDictionary<string, object>)x, "lights[" + i + "]")).ToArray(),
                LightingSchedule = J.A(d, "lighting_schedule", p).Select((x, i) => LightingKeyframe.FromJson((IDictionary<string, object>)x, "lighting_schedule[" + i + "]")).ToArray(),
                Avatars = J.A(d, "avatars", p).Select((x, i) => AvatarSpec.FromJson((IDictionary<string, object>)x, "avatars[" + i + "]")).ToArray(),
                TaskScripts = scripts,
                ModalityEvents = J.A(d, "modality_events", p).Select((x, i) => ModalityEvent.FromJson((IDictionary<string, object>)x, "modality_events[" + i + "]")).ToArray(),
                RadioRangeM = J.D(d, "radio_range_m", p),
            };
        }

        /// <summary>The same object back, for the canonical writer.</summary>
        public Dictionary<string, object> ToJson()
        {
            var scripts = new Dictionary<string, object>();
            foreach (var kv in TaskScripts) scripts[kv.Key] = kv.Value.ToJson();
            return new Dictionary<string, object>
            {
                { "name", Name }, { "description", Description }, { "step_hz", StepHz }, { "audio_hz", AudioHz }, { "render", Render.ToJson() },
                { "rooms", Rooms.Select(x => (object)x.ToJson()).ToList() }, { "objects", Objects.Select(x => (object)x.ToJson()).ToList() },
                { "lights", Lights.Select(x => (object)x.ToJson()).ToList() }, { "lighting_schedule", LightingSchedule.Select(x => (object)x.ToJson()).ToList() },
                { "avatars", Avatars.Select(x => (object)x.ToJson()).ToList() }, { "task_scripts", scripts },
                { "modality_events", ModalityEvents.Select(x => (object)x.ToJson()).ToList() }, { "radio_range_m", RadioRangeM },
            };
        }

        /// <summary>A room by name (null when unknown).</summary>
        public Room RoomNamed(string name) { return Rooms.FirstOrDefault(r => r.Name == name); }
    }
}
