// Reads the golden messages written by Python (bridge/unity/codec.py write_golden) and checks that the C# codec
// re-encodes each one byte for byte, and that the C# lighting schedule matches the embedded scene's samples.
// Build: mcs -r:System.Numerics -out:codec_test.exe Program.cs ../../Assets/XRFed/Codec/*.cs
// Run:   mono codec_test.exe golden
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using XRFed.Codec;

namespace XRFed.Tests
{
    public static class Program
    {
        public static int Main(string[] args)
        {
            string dir = args.Length > 0 ? args[0] : "golden";
            int failures = 0, checks = 0;
            ScenarioModel scenario = null;
            foreach (var path in Directory.GetFiles(dir, "*.json").OrderBy(p => p, StringComparer.Ordinal))
            {
                string name = Path.GetFileNameWithoutExtension(path);
                if (name.StartsWith("lighting_")) continue;
                byte[] want = File.ReadAllBytes(path);
                byte[] got;
                try
                {
                    var msg = XrfedMessage.Decode(want);
                    if (msg.Type == "load_scenario")
                    {
                        scenario = ScenarioModel.FromJson((IDictionary<string, object>)msg.Values["scenario"]);
                        msg = new XrfedMessage("load_scenario", new Dictionary<string, object> { { "scenario", scenario.ToJson() } });
                    }
                    got = msg.Encode();
                }
                catch (Exception e)
                {
                    Console.WriteLine("FAIL " + name + ": " + e.Message);
                    failures++;
                    continue;
                }
                checks++;
                if (got.SequenceEqual(want)) { Console.WriteLine("ok   " + name); continue; }
                failures++;
                int i = 0;
                while (i < Math.Min(got.Length, want.Length) && got[i] == want[i]) i++;
                Console.WriteLine("FAIL " + name + ": differs at byte " + i + "\n  want ..." + Snip(want, i) + "\n  got  ..." + Snip(got, i));
            }
            string lightingPath = Path.Combine(dir, "lighting_samples.json");
            if (File.Exists(lightingPath) && scenario != null)
            {
                var samples = (List<object>)CanonicalJson.Parse(File.ReadAllText(lightingPath, Encoding.ASCII));
                var schedule = new LightingSchedule(scenario);
                foreach (Dictionary<string, object> s in samples)
                {
                    checks++;
                    var l = schedule.At((string)s["room"], Convert.ToDouble(s["t_s"]));
                    var want = ((List<object>)s["light"]).Select(Convert.ToDouble).ToArray();
                    var got = new[] { l.Intensity, l.ColorTemperatureK, l.LightsOn ? 1.0 : 0.0, l.IlluminanceLux };
                    if (want.Zip(got, (a, b) => Math.Abs(a - b) <= 1e-9 * Math.Max(1.0, Math.Abs(a))).All(x => x)) continue;
                    failures++;
                    Console.WriteLine("FAIL lighting " + s["room"] + " t=" + s["t_s"] + ": want " + string.Join(",", want) + " got " + string.Join(",", got));
                }
                Console.WriteLine("ok   lighting_samples (" + samples.Count + ")");
            }
            Console.WriteLine(checks + " checks, " + failures + " failures");
            return failures == 0 && checks > 0 ? 0 : 1;
        }

        static string Snip(byte[] b, int at)
        {
            int s = Math.Max(0, at - 20);
            return Encoding.ASCII.GetString(b, s, Math.Min(b.Length, at + 40) - s);
        }
    }
}
