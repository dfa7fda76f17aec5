// The xrfed side-channel message schema (protocol version 1), mirrored from bridge/unity/codec.py MESSAGE_FIELDS.
// No UnityEngine: compiled and tested outside Unity against Python's golden messages.
using System;
using System.Collections.Generic;
using System.Text;

namespace XRFed.Codec
{
    /// <summary>Field kinds of the schema: a trailing '?' allows null.</summary>
    public static class XrfedSchema
    {
        /// <summary>Protocol version carried as "v" in every message.</summary>
        public const int Version = 1;

        /// <summary>The channel's GUID (same string as Python's XRFED_CHANNEL_ID).</summary>
        public const string ChannelId = "aa13cc98-c31f-55ee-a263-bfb51520e394";

        /// <summary>Message type -> field -> kind (int, float, str, bool, list, dict, with '?' = nullable).</summary>
        public static readonly Dictionary<string, Dictionary<string, string>> Fields =
            new Dictionary<string, Dictionary<string, string>>
            {
                { "reset", new Dictionary<string, string> { { "seed", "int" } } },
                { "load_scenario", new Dictionary<string, string> { { "scenario", "dict" } } },
                { "set_script", new Dictionary<string, string> { { "avatar", "str" }, { "script", "str" } } },
                { "set_modality", new Dictionary<string, string> { { "device_id", "str" }, { "modality", "str" }, { "enabled", "bool" } } },
                { "show_prediction", new Dictionary<string, string> {
                    { "device_id", "str" }, { "task", "str" }, { "label", "str" }, { "confidence", "float" },
                    { "latency_ms", "float?" }, { "frame_step", "int?" }, { "sent_ns", "int?" } } },
                { "hello", new Dictionary<string, string> { { "scene", "str" }, { "player", "str" }, { "step_dt_s", "float" }, { "devices", "list" } } },
                { "frames", new Dictionary<string, string> { { "frames", "list" } } },
                { "overlay_shown", new Dictionary<string, string> {
                    { "device_id", "str" }, { "task", "str" }, { "label", "str" }, { "frame_step", "int?" },
                    { "sent_ns", "int?" }, { "scene_step", "int" } } },
                { "event", new Dictionary<string, string> { { "name", "str" }, { "detail", "str" } } },
            };
    }

    /// <summary>
    /// One validated xrfed message: its type and every schema field (absent nullable ones as null). Floats are
    /// stored as double and ints as long, so re-encoding reproduces Python's bytes exactly.
    /// </summary>
    public sealed class XrfedMessage
    {
        /// <summary>The message type, a key of <see cref="XrfedSchema.Fields"/>.</summary>
        public readonly string Type;

        /// <summary>Field values by name (without "v" and "type").</summary>
        public readonly Dictionary<string, object> Values;

        /// <summary>Build and validate a message; missing nullable fields become null.</summary>
        public XrfedMessage(string type, IDictionary<string, object> values)
        {
            Dictionary<string, string> schema;
            if (!XrfedSchema.Fields.TryGetValue(type, out schema))
                throw new FormatException("unknown xrfed message type '" + type + "'");
            foreach (var k in values.Keys)
                if (!schema.ContainsKey(k)) throw new FormatException("xrfed message '" + type + "': unknown field '" + k + "'");
            Type = type;
            Values = new Dictionary<string, object>();
            foreach (var kv in schema)
            {
                object v;
                values.TryGetValue(kv.Key, out v);
                Values[kv.Key] = Coerce(type, kv.Key, kv.Value, v);
            }
        }

        /// <summary>Parse and validate one payload (ASCII JSON bytes).</summary>
        public static XrfedMessage Decode(byte[] payload)
        {
            var obj = CanonicalJson.Parse(Encoding.ASCII.GetString(payload)) as Dictionary<string, object>;
            if (obj == null) throw new FormatException("xrfed message must be a JSON object");
            object v, t;
            if (!obj.TryGetValue("v", out v) || !(v is long) || (long)v != XrfedSchema.Version)
                throw new FormatException("xrfed message version " + v + "; this side speaks " + XrfedSchema.Version);
            if (!obj.TryGetValue("type", out t) || !(t is string))
                throw new FormatException("xrfed message without a type");
            var body = new Dictionary<string, object>(obj);
            body.Remove("v");
            body.Remove("type");
            foreach (var field in XrfedSchema.Fields.ContainsKey((string)t) ? XrfedSchema.Fields[(string)t].Keys : new Dictionary<string, string>().Keys)
                if (!body.ContainsKey(field)) throw new FormatException("xrfed message '" + t + "': field '" + field + "' is missing");
            return new XrfedMessage((string)t, body);
        }

        /// <summary>The canonical ASCII bytes (identical to Python's encode_message).</summary>
        public byte[] Encode()
        {
            var all = new Dictionary<string, object>(Values);
            all["v"] = (long)XrfedSchema.Version;
            all["type"] = Type;
            return Encoding.ASCII.GetBytes(CanonicalJson.Write(all));
        }

        /// <summary>A field as string (null when null).</summary>
        public string Str(string field) { return (string)Values[field]; }

        /// <summary>A numeric field as double.</summary>
        public double Num(string field) { return Convert.ToDouble(Values[field]); }

        /// <summary>A nullable int field.</summary>
        public long? Int(string field) { return Values[field] == null ? (long?)null : Convert.ToInt64(Values[field]); }

        static object Coerce(string type, string field, string kind, object v)
        {
            bool nullable = kind.EndsWith("?");
            kind = kind.TrimEnd('?');
            if (v == null)
            {
                if (nullable) return null;
                throw new FormatException("xrfed message '" + type + "': field '" + field + "' is required");
            }
            switch (kind)
            {
                case "int":
                    if (v is long || v is int) return Convert.ToInt64(v);
                    break;
                case "float":
                    if (v is double || v is float || v is long || v is int)
                    {
                        double d = Convert.ToDouble(v);
                        if (double.IsNaN(d) || double.IsInfinity(d)) break;
                        return d;
                    }
                    break;
                case "str":
                    if (v is string) return v;
                    break;
                case "bool":
                    if (v is bool) return v;
                    break;
                case "list":
                    if (v is List<object>) return v;
                    break;
                case "dict":
                    if (v is Dictionary<string, object>) return v;
                    break;
            }
            throw new FormatException("xrfed message '" + type + "': field '" + field + "' must be " + kind + ", got " + v.GetType().Name);
        }
    }
}
