// Checks the UnityEngine-free StreamCodec against Python's golden messages, then writes messages of its own for
// Python to decode. Build and run (tests/bridge/test_stream_csharp.py does this):
//   mcs -out:codec_tests.exe Assets/XRFed/Streaming/StreamCodec.cs Tests/StreamCodec/StreamCodecTests.cs
//   mono codec_tests.exe GOLDEN_DIR OUT_DIR
using System;
using System.Collections.Generic;
using System.IO;
using XRFed.Streaming;

namespace XRFed.Tests
{
    static class StreamCodecTests
    {
        static int passed, failed;

        static void Check(bool ok, string what)
        {
            if (ok) passed++;
            else { failed++; Console.WriteLine("FAIL: " + what); }
        }

        static List<byte[]> ReadContainer(string path)
        {
            var data = File.ReadAllBytes(path);
            int n = BitConverter.ToInt32(data, 0), off = 4;
            var parts = new List<byte[]>();
            for (int k = 0; k < n; k++)
            {
                int size = BitConverter.ToInt32(data, off);
                var b = new byte[size];
                Array.Copy(data, off + 4, b, 0, size);
                parts.Add(b);
                off += 4 + size;
            }
            return parts;
        }

        static void WriteContainer(string path, List<byte[]> parts)
        {
            using (var f = new BinaryWriter(File.Create(path)))
            {
                f.Write(parts.Count);
                foreach (var p in parts) { f.Write(p.Length); f.Write(p); }
            }
        }

        static bool SameBytes(byte[] a, byte[] b)
        {
            if (a.Length != b.Length) return false;
            for (int i = 0; i < a.Length; i++) if (a[i] != b[i]) return false;
            return true;
        }

        static int Main(string[] args)
        {
            string golden = args[0], outDir = args[1];
            var raw = StreamCodec.Decode(ReadContainer(Path.Combine(golden, "frame_raw.xrfmsg")));
            var zl = StreamCodec.Decode(ReadContainer(Path.Combine(golden, "frame_zlib.xrfmsg")));
            var hb = StreamCodec.Decode(ReadContainer(Path.Combine(golden, "heartbeat.xrfmsg")));

            // Golden frame: synthetic_frame("quest_0", 8x6, step 3), seq 7 (bridge/stream/golden.py).
            Check(raw.Topic == "xrfed/quest_0/frame", "topic");
            Check(raw.Kind == "frame" && (long)raw.Header["step"] == 3 && (long)raw.Header["seq"] == 7, "step/seq");
            Check((string)raw.Header["device_id"] == "quest_0" && (string)raw.Header["profile"] == "meta_quest_3", "ids");
            Check(Math.Abs((double)raw.Header["sim_time_s"] - 0.4) < 1e-12, "sim_time_s");
            Check((long)raw.Header["audio_hz"] == 16000, "audio_hz");
            var labels = (Dictionary<string, object>)raw.Header["labels"];
            Check((string)labels["object_recognition"] == "mug", "labels");
            var names = new List<string>();
            foreach (var p in raw.Parts) names.Add(p.Name);
            Check(string.Join(",", names) == "rgb,depth_m,segmentation,gaze,gaze_valid,audio,pose,imu,hands,hands_valid,lighting",
                  "part order " + string.Join(",", names));
            var rgb = raw.Part("rgb");
            Check(rgb.DType == "uint8" && rgb.Shape.Length == 3 && rgb.Shape[0] == 8 && rgb.Shape[1] == 6, "rgb shape");
            // rgb[y, x] = (x * 255 / 5, y * 255 / 7, (37 * 3) % 256): pixel (1, 2) -> (102, 36, 111)
            int px = (1 * 6 + 2) * 3;
            Check(rgb.Data[px] == 102 && rgb.Data[px + 1] == 36 && rgb.Data[px + 2] == 111, "rgb pixel");
            var depth = raw.Part("depth_m").AsFloat32();
            Check(float.IsPositiveInfinity(depth[0]) && depth[1 * 6 + 2] == 1.014f, "depth values");
            var pose = raw.Part("pose").AsFloat32();
            Check(pose[0] == 1.0f && pose[1] == 2.0f && pose[2] == 1.58f, "pose position");
            Check(raw.Part("gaze_valid").Shape.Length == 0 && raw.Part("gaze_valid").Data[0] == 1, "gaze_valid scalar");
            Check(raw.Part("hands_valid").Data[0] == 1 && raw.Part("hands_valid").Data[1] == 0, "hands_valid");

            // The zlib golden decodes to exactly the raw golden's arrays.
            foreach (var p in raw.Parts)
            {
                var q = zl.Part(p.Name);
                Check(q != null && SameBytes(p.Data, q.Data), "zlib part " + p.Name);
            }
            Check(zl.Part("depth_m").Encoding == "zlib", "zlib declared");

            Check(hb.Kind == "heartbeat" && hb.Topic == "xrfed-hb/golden", "heartbeat");
            var last = (Dictionary<string, object>)hb.Header["last_seq"];
            Check((long)last["xrfed/quest_0/frame"] == 7 && (double)hb.Header["step_dt_s"] == 0.1, "heartbeat fields");

            // Rejections.
            var bad = ReadContainer(Path.Combine(golden, "frame_raw.xrfmsg"));
            bad[2] = new byte[3];
            try { StreamCodec.Decode(bad); Check(false, "size mismatch accepted"); }
            catch (StreamProtocolException e) { Check(e.Reason == "size_mismatch", "size_mismatch reason " + e.Reason); }
            bad = ReadContainer(Path.Combine(golden, "frame_raw.xrfmsg"));
            bad[1] = System.Text.Encoding.UTF8.GetBytes("{not json");
            try { StreamCodec.Decode(bad); Check(false, "garbage accepted"); }
            catch (StreamProtocolException e) { Check(e.Reason == "bad_header", "bad_header reason " + e.Reason); }

            // Re-encode the golden frame with this codec (raw and zlib) for Python to decode.
            var header = new Dictionary<string, object>();
            foreach (var k in new[] { "publisher", "session", "seq", "device_id", "user_id", "profile", "channel", "step",
                                      "sim_time_s", "wall_time_ns", "sent_ns", "camera_fov_y_deg", "room", "labels",
                                      "active_tasks", "events", "audio_hz" })
                header[k] = raw.Header[k];
            header["publisher"] = "csharp";
            WriteContainer(Path.Combine(outDir, "csharp_raw.xrfmsg"), StreamCodec.EncodeFrame(header, raw.Parts));
            var zparts = new List<StreamPart>();
            foreach (var p in raw.Parts)
                zparts.Add(new StreamPart { Name = p.Name, DType = p.DType, Shape = p.Shape, Units = p.Units, Data = p.Data,
                                            Encoding = (p.Name == "depth_m" || p.Name == "audio") ? "zlib" : "raw" });
            WriteContainer(Path.Combine(outDir, "csharp_zlib.xrfmsg"), StreamCodec.EncodeFrame(header, zparts));
            var devices = new List<object> { new Dictionary<string, object> { { "device_id", "quest_0" },
                { "user_id", "user_quest_0" }, { "profile", "meta_quest_3" } } };
            WriteContainer(Path.Combine(outDir, "csharp_heartbeat.xrfmsg"), StreamCodec.EncodeHeartbeat(
                "csharp", "0123456789abcdef", 2, 1700000000123456789L,
                new Dictionary<string, object> { { "xrfed/quest_0/frame", 7L } }, devices, 0.1));

            Console.WriteLine(passed + " passed, " + failed + " failed");
            return failed == 0 ? 0 : 1;
        }
    }
}
