// UnityEngine-free: compiled with Mono in tests/bridge/test_unity_compile.py and checked against Python's integers.
using System;

namespace XRFed.Codec
{
    /// <summary>
    /// The compressed form of the "depth_m" observation, shared with Python's decoder: each pixel's metric depth
    /// along the optical axis is quantized to whole millimetres, v = clamp(round(depth_m * 1000), 0, 65535), and
    /// carried in an 8-bit RGB PNG as R = v &gt;&gt; 8, G = v &amp; 0xFF, B = 0. v = 65535 (<see cref="NoReturn"/>) means no
    /// return or beyond range (65.535 m); NaN and +infinity map to it. The sensor declares
    /// <c>CompressionSpec(PNG, compressedChannelMapping = {0, 1, -1})</c>, so ML-Agents' Python decoder hands over
    /// two channels, R/255 and G/255, as an observation of shape (2, H, W).
    /// Quantization bound: |decoded - depth_m| &lt;= 0.0005 m for 0 &lt;= depth_m &lt; 65.5345 m.
    /// </summary>
    public static class DepthPng
    {
        /// <summary>The code for "no return / beyond range".</summary>
        public const int NoReturn = 65535;
        /// <summary>Codes per metre (millimetre resolution).</summary>
        public const double CodesPerMetre = 1000.0;
        /// <summary>Largest quantization error for depths in range, metres.</summary>
        public const double QuantizationBoundM = 0.0005;
        /// <summary>Channel mapping of the compressed PNG: R -> channel 0, G -> channel 1, B dropped.</summary>
        public static readonly int[] ChannelMapping = { 0, 1, -1 };

        /// <summary>
        /// The millimetre code of one depth: round half to even of depth_m * 1000 computed in double precision
        /// (the float32 depth widened exactly, one correctly rounded product), clamped to [0, 65535]; NaN -> 65535.
        /// </summary>
        public static int Code(float depthM)
        {
            if (float.IsNaN(depthM)) return NoReturn;
            double mm = Math.Round((double)depthM * CodesPerMetre, MidpointRounding.ToEven);
            if (mm <= 0) return 0;
            return mm >= NoReturn ? NoReturn : (int)mm;
        }

        /// <summary>Metres of a code (+infinity for <see cref="NoReturn"/>).</summary>
        public static double Metres(int code)
        {
            if (code < 0 || code > NoReturn)
                throw new ArgumentOutOfRangeException("code", "expected a depth code in [0, 65535], got " + code);
            return code == NoReturn ? double.PositiveInfinity : code / CodesPerMetre;
        }

        /// <summary>
        /// Encode <paramref name="width"/> x <paramref name="height"/> depths (any row order; kept as given) into
        /// 24-bit RGB pixels, 3 bytes per pixel in the same order.
        /// </summary>
        public static void EncodeRgb24(float[] depthM, int width, int height, byte[] rgb24)
        {
            if (width <= 0 || height <= 0)
                throw new ArgumentException("expected a positive image size, got " + width + "x" + height);
            int n = width * height;
            if (depthM == null || depthM.Length != n)
                throw new ArgumentException("expected " + n + " depths, got " + (depthM == null ? 0 : depthM.Length));
            if (rgb24 == null || rgb24.Length != 3 * n)
                throw new ArgumentException("expected an RGB buffer of " + 3 * n + " bytes, got " + (rgb24 == null ? 0 : rgb24.Length));
            for (int i = 0; i < n; i++)
            {
                int v = Code(depthM[i]);
                rgb24[3 * i] = (byte)(v >> 8);
                rgb24[3 * i + 1] = (byte)(v & 0xFF);
                rgb24[3 * i + 2] = 0;
            }
        }

        /// <summary>The two observation channels ML-Agents' decoder produces from a code: (R / 255, G / 255).</summary>
        public static void Channels(int code, out float high, out float low)
        {
            high = (code >> 8) / 255.0f;
            low = (code & 0xFF) / 255.0f;
        }
    }
}
