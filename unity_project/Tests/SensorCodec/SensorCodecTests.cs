// Prints what the UnityEngine-free sensor helpers compute, for tests/bridge/test_unity_compile.py to compare with
// Python's integer arithmetic: depth codes (XRFed.Codec.DepthPng), Unix nanoseconds (UnixTime), head poses (WorldFrame).
// Usage: mono SensorCodecTests.exe DEPTHS_FILE  (DEPTHS_FILE: float32 little-endian depths in metres)
using System;
using System.Globalization;
using System.IO;
using XRFed.Codec;

namespace XRFed.Tests
{
    public static class SensorCodecTests
    {
        public static int Main(string[] args)
        {
            var inv = CultureInfo.InvariantCulture;
            byte[] raw = File.ReadAllBytes(args[0]);
            int n = raw.Length / 4;
            var depth = new float[n];
            Buffer.BlockCopy(raw, 0, depth, 0, 4 * n);
            var rgb = new byte[3 * n];
            DepthPng.EncodeRgb24(depth, n, 1, rgb);
            for (int i = 0; i < n; i++)
                Console.WriteLine("depth " + i + " " + DepthPng.Code(depth[i]) + " " + rgb[3 * i] + " " + rgb[3 * i + 1] + " " + rgb[3 * i + 2]);
            try { DepthPng.EncodeRgb24(depth, n, 2, rgb); Console.WriteLine("size_check missing"); }
            catch (ArgumentException e) { Console.WriteLine("size_check " + e.Message); }
            Console.WriteLine("unix_ns " + UnixTime.TicksToUnixNs(new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc).Ticks));
            var pose = new float[7];
            WorldFrame.HeadPose(new double[] { 1, 2, 3 }, new double[] { 1, 0, 0 }, new double[] { 0, 1, 0 }, new double[] { 0, 0, 1 }, pose, 0);
            Console.WriteLine("pose_north " + string.Join(" ", Array.ConvertAll(pose, v => v.ToString("R", inv))));
            WorldFrame.HeadPose(new double[] { 0, 1.5, 0 }, new double[] { 0, 0, -1 }, new double[] { 0, 1, 0 }, new double[] { 1, 0, 0 }, pose, 0);
            Console.WriteLine("pose_east " + string.Join(" ", Array.ConvertAll(pose, v => v.ToString("R", inv))));
            return 0;
        }
    }
}
