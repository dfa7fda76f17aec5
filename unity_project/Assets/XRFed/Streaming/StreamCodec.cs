// xrfed stream protocol v1 codec (docs/stream-protocol.md). Free of UnityEngine so that CI compiles it with Mono
// and checks it against Python's golden messages (unity_project/Tests/StreamCodec).
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.IO.Compression;
using System.Text;
using XRFed.Codec;

namespace XRFed.Streaming
{
    /// <summary>A message the codec refuses; <see cref="Reason"/> matches the Python reader's reason codes.</summary>
    public class StreamProtocolException : Exception
    {
        /// <summary>Short reason code (bad_header, size_mismatch, ...).</summary>
        public readonly string Reason;

        /// <summary>Create with a reason code and a human-readable detail.</summary>
        public StreamProtocolException(string reason, string detail)
            : base("stream message rejected (" + reason + "): " + detail)
        {
            Reason = reason;
        }
    }

    /// <summary>One array of a frame message: name, wire dtype, shape, encoding and its decoded little-endian bytes.</summary>
    public class StreamPart
    {
        /// <summary>Part name, e.g. "rgb", "depth_m", "gaze" (see the protocol's part table).</summary>
        public string Name;
        /// <summary>Wire dtype: bool, uint8, int8, uint16, int16, uint32, int32, int64, float16, float32, float64.</summary>
        public string DType;
        /// <summary>Array shape, C order.</summary>
        public int[] Shape;
        /// <summary>raw, zlib, png or jpeg.</summary>
        public string Encoding = "raw";
        /// <summary>Units / field list (informative).</summary>
        public string Units;
        /// <summary>Decoded array bytes (C order, little-endian). For png/jpeg: null after decoding (images are
        /// decoded by the caller's image library).</summary>
        public byte[] Data;
        /// <summary>The payload as it travels (equals Data for raw).</summary>
        public byte[] Payload;

        /// <summary>Item size of a wire dtype in bytes.</summary>
        public static int ItemSize(string dtype)
        {
            switch (dtype)
            {
                case "bool": case "uint8": case "int8": return 1;
                case "uint16": case "int16": case "float16": return 2;
                case "uint32": case "int32": case "float32": return 4;
                case "int64": case "float64": return 8;
                default: throw new StreamProtocolException("bad_dtype", "unknown dtype " + dtype);
            }
        }

        /// <summary>Number of decoded bytes implied by dtype and shape.</summary>
        public long ExpectedBytes()
        {
            long n = ItemSize(DType);
            foreach (var s in Shape) n *= s;
            return n;
        }

        /// <summary>A raw float32 part from values (little-endian).</summary>
        public static StreamPart Float32(string name, float[] values, int[] shape, string units)
        {
            var bytes = new byte[values.Length * 4];
            Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
            if (!BitConverter.IsLittleEndian) SwapEndian(bytes, 4);
            return new StreamPart { Name = name, DType = "float32", Shape = shape, Units = units, Data = bytes };
        }

        /// <summary>Decoded float32 values of this part.</summary>
        public float[] AsFloat32()
        {
            if (DType != "float32") throw new StreamProtocolException("bad_dtype", Name + " is " + DType);
            var b = (byte[])Data.Clone();
            if (!BitConverter.IsLittleEndian) SwapEndian(b, 4);
            var f = new float[b.Length / 4];
            Buffer.BlockCopy(b, 0, f, 0, b.Length);
            return f;
        }

        internal static void SwapEndian(byte[] b, int size)
        {
            for (int i = 0; i < b.Length; i += size) Array.Reverse(b, i, size);
        }
    }

    /// <summary>A decoded message: topic, header (parsed JSON) and parts.</summary>
    public class StreamMessage
    {
        /// <summary>xrfed/&lt;device_id&gt;/&lt;channel&gt; or xrfed-hb/&lt;publisher&gt;.</summary>
        public string Topic;
        /// <summary>The header as parsed JSON (Dictionary, List, string, double, long, bool or null values).</summary>
        public Dictionary<string, object> Header;
        /// <summary>Parts in header order.</summary>
        public List<StreamPart> Parts = new List<StreamPart>();

        /// <summary>The header's "kind" ("frame" or "heartbeat").</summary>
        public string Kind { get { return (string)Header["kind"]; } }

        /// <summary>The part with this name, or null.</summary>
        public StreamPart Part(string name)
        {
            foreach (var p in Parts) if (p.Name == name) return p;
            return null;
        }
    }

    /// <summary>Encoder and decoder of stream protocol v1 messages (multipart: topic, JSON header, buffers).</summary>
    public static class StreamCodec
    {
        /// <summary>Protocol name in every header.</summary>
        public const string Protocol = "xrfed-stream";
        /// <summary>Protocol version this codec speaks.</summary>
        public const int Version = 1;
        /// <summary>Largest header accepted by Decode.</summary>
        public static int MaxHeaderBytes = 64 * 1024;
        /// <summary>Largest decoded part accepted by Decode.</summary>
        public static long MaxPartBytes = 128L * 1024 * 1024;

        /// <summary>Frame topic for a device and channel.</summary>
        public static string FrameTopic(string deviceId, string channel = "frame")
        {
            CheckName("device_id", deviceId);
            CheckName("channel", channel);
            return "xrfed/" + deviceId + "/" + channel;
        }

        static void CheckName(string what, string name)
        {
            if (string.IsNullOrEmpty(name) || name.IndexOf('/') >= 0 || name.IndexOf(' ') >= 0)
                throw new StreamProtocolException("bad_topic", what + " must be non-empty without '/' or spaces");
        }

        /// <summary>Encode a frame message. <paramref name="header"/> holds the frame metadata (device_id, step,
        /// sim_time_s, seq, ...); proto, v, kind and parts are filled in. Parts with Encoding "zlib" are compressed
        /// here; "png"/"jpeg" parts must carry their encoded bytes in Payload (Unity's ImageConversion).</summary>
        public static List<byte[]> EncodeFrame(Dictionary<string, object> header, IList<StreamPart> parts)
        {
            var h = new Dictionary<string, object>(header);
            h["proto"] = Protocol;
            h["v"] = (long)Version;
            h["kind"] = "frame";
            var descs = new List<object>();
            var payloads = new List<byte[]>();
            foreach (var p in parts)
            {
                var d = new Dictionary<string, object>();
                d["name"] = p.Name;
                d["dtype"] = p.DType;
                var shape = new List<object>();
                foreach (var s in p.Shape) shape.Add((long)s);
                d["shape"] = shape;
                d["encoding"] = p.Encoding;
                d["nbytes"] = p.ExpectedBytes();
                if (p.Units != null) d["units"] = p.Units;
                byte[] payload;
                if (p.Encoding == "raw")
                {
                    if (p.Data.LongLength != p.ExpectedBytes())
                        throw new StreamProtocolException("size_mismatch", p.Name + ": data does not match shape");
                    payload = p.Data;
                }
                else if (p.Encoding == "zlib") payload = ZlibCompress(p.Data);
                else if (p.Encoding == "png" || p.Encoding == "jpeg") payload = p.Payload;
                else throw new StreamProtocolException("bad_encoding", p.Encoding);
                descs.Add(d);
                payloads.Add(payload);
            }
            h["parts"] = descs;
            var topic = FrameTopic((string)h["device_id"], h.ContainsKey("channel") ? (string)h["channel"] : "frame");
            var json = CanonicalJson.Write(h, sortKeys: false);
            var msg = new List<byte[]> { Encoding.UTF8.GetBytes(topic), Encoding.UTF8.GetBytes(json) };
            msg.AddRange(payloads);
            return msg;
        }

        /// <summary>A heartbeat message (no buffers).</summary>
        public static List<byte[]> EncodeHeartbeat(string publisher, string session, long hbSeq, long sentNs,
                                                   Dictionary<string, object> lastSeq, List<object> devices,
                                                   double stepDtS)
        {
            CheckName("publisher", publisher);
            var h = new Dictionary<string, object>
            {
                { "proto", Protocol }, { "v", (long)Version }, { "kind", "heartbeat" }, { "publisher", publisher },
                { "session", session }, { "seq", hbSeq }, { "sent_ns", sentNs }, { "last_seq", lastSeq },
                { "devices", devices }, { "step_dt_s", stepDtS }, { "parts", new List<object>() },
            };
            var json = CanonicalJson.Write(h, sortKeys: false);
            return new List<byte[]> { Encoding.UTF8.GetBytes("xrfed-hb/" + publisher), Encoding.UTF8.GetBytes(json) };
        }

        /// <summary>Decode and validate a multipart message (throws <see cref="StreamProtocolException"/>).</summary>
        public static StreamMessage Decode(IList<byte[]> frames)
        {
            if (frames.Count < 2) throw new StreamProtocolException("too_few_parts", frames.Count + " part(s)");
            if (frames[1].Length > MaxHeaderBytes) throw new StreamProtocolException("oversized", "header");
            var msg = new StreamMessage();
            object parsed;
            try
            {
                msg.Topic = new UTF8Encoding(false, true).GetString(frames[0]);
                parsed = CanonicalJson.Parse(new UTF8Encoding(false, true).GetString(frames[1]));
            }
            catch (Exception e) when (!(e is StreamProtocolException))
            {
                throw new StreamProtocolException("bad_header", e.Message);
            }
            msg.Header = parsed as Dictionary<string, object>;
            if (msg.Header == null) throw new StreamProtocolException("bad_header", "header is not a JSON object");
            object v;
            if (!msg.Header.TryGetValue("proto", out v) || !(v is string) || (string)v != Protocol)
                throw new StreamProtocolException("bad_proto", "proto");
            if (!msg.Header.TryGetValue("v", out v) || !(v is long) || (long)v != Version)
                throw new StreamProtocolException("bad_version", "version");
            if (!msg.Header.TryGetValue("kind", out v) || !("frame".Equals(v) || "heartbeat".Equals(v)))
                throw new StreamProtocolException("bad_header", "kind");
            var descs = msg.Header.ContainsKey("parts") ? msg.Header["parts"] as List<object> : new List<object>();
            if (descs == null || descs.Count != frames.Count - 2)
                throw new StreamProtocolException("part_count", "header parts do not match buffers");
            if (msg.Kind == "frame")
            {
                var dev = msg.Header.ContainsKey("device_id") ? msg.Header["device_id"] as string : null;
                if (dev == null || !msg.Topic.StartsWith("xrfed/" + dev + "/", StringComparison.Ordinal))
                    throw new StreamProtocolException("topic_mismatch", msg.Topic);
            }
            for (int i = 0; i < descs.Count; i++) msg.Parts.Add(DecodePart(descs[i] as Dictionary<string, object>, frames[i + 2]));
            return msg;
        }

        static StreamPart DecodePart(Dictionary<string, object> d, byte[] payload)
        {
            if (d == null) throw new StreamProtocolException("bad_header", "part descriptor is not an object");
            var p = new StreamPart
            {
                Name = d.ContainsKey("name") ? d["name"] as string : null,
                DType = d.ContainsKey("dtype") ? d["dtype"] as string : null,
                Encoding = d.ContainsKey("encoding") ? d["encoding"] as string : "raw",
                Units = d.ContainsKey("units") ? d["units"] as string : null,
                Payload = payload,
            };
            var shape = d.ContainsKey("shape") ? d["shape"] as List<object> : null;
            if (p.Name == null || shape == null) throw new StreamProtocolException("bad_header", "part name/shape");
            p.Shape = new int[shape.Count];
            for (int i = 0; i < shape.Count; i++)
            {
                if (!(shape[i] is long) || (long)shape[i] < 0 || (long)shape[i] > int.MaxValue)
                    throw new StreamProtocolException("bad_shape", p.Name);
                p.Shape[i] = (int)(long)shape[i];
            }
            long expected = p.ExpectedBytes();
            if (expected > MaxPartBytes) throw new StreamProtocolException("oversized", p.Name);
            if (p.Encoding == "raw")
            {
                if (payload.LongLength != expected) throw new StreamProtocolException("size_mismatch", p.Name);
                p.Data = payload;
            }
            else if (p.Encoding == "zlib")
            {
                p.Data = ZlibDecompress(payload, expected);
                if (p.Data.LongLength != expected) throw new StreamProtocolException("size_mismatch", p.Name);
            }
            else if (p.Encoding != "png" && p.Encoding != "jpeg")
                throw new StreamProtocolException("bad_encoding", p.Encoding);
            return p;
        }

        /// <summary>zlib (RFC 1950) = 2-byte header + raw deflate + Adler-32 of the uncompressed data.</summary>
        public static byte[] ZlibCompress(byte[] data)
        {
            using (var ms = new MemoryStream())
            {
                ms.WriteByte(0x78);
                ms.WriteByte(0x01);
                using (var ds = new DeflateStream(ms, CompressionMode.Compress, true)) ds.Write(data, 0, data.Length);
                uint a = Adler32(data);
                ms.WriteByte((byte)(a >> 24));
                ms.WriteByte((byte)(a >> 16));
                ms.WriteByte((byte)(a >> 8));
                ms.WriteByte((byte)a);
                return ms.ToArray();
            }
        }

        /// <summary>Inflate a zlib stream, reading at most <paramref name="maxBytes"/> + 1 bytes (bomb-safe).</summary>
        public static byte[] ZlibDecompress(byte[] payload, long maxBytes)
        {
            if (payload.Length < 6 || (payload[0] & 0x0f) != 8)
                throw new StreamProtocolException("bad_payload", "not a zlib stream");
            try
            {
                using (var src = new MemoryStream(payload, 2, payload.Length - 6))
                using (var ds = new DeflateStream(src, CompressionMode.Decompress))
                using (var dst = new MemoryStream())
                {
                    var buf = new byte[65536];
                    int n;
                    while ((n = ds.Read(buf, 0, buf.Length)) > 0)
                    {
                        dst.Write(buf, 0, n);
                        if (dst.Length > maxBytes) throw new StreamProtocolException("size_mismatch", "inflates too far");
                    }
                    return dst.ToArray();
                }
            }
            catch (InvalidDataException e)
            {
                throw new StreamProtocolException("bad_payload", e.Message);
            }
        }

        static uint Adler32(byte[] data)
        {
            uint a = 1, b = 0;
            foreach (var x in data)
            {
                a = (a + x) % 65521;
                b = (b + a) % 65521;
            }
            return (b << 16) | a;
        }
    }
}
