// UnityEngine-free: compiled with Mono in tests/bridge/test_unity_compile.py.
using System;

namespace XRFed.Codec
{
    /// <summary>
    /// The one Unity -> xrfed coordinate convention (bridge/frame.py), used by the ML-Agents avatar and the stream
    /// publisher alike. Unity's world is left-handed, y up; xrfed's world is right-handed, z up, metres; a scenario
    /// room's (x, y) is Unity's (x, z). So a Unity point (x, y, z) is the xrfed point (x, z, y). The head frame is
    /// +x right, +y up, -z forward (OpenXR view), so its axes in the world are the camera's right, up and -forward.
    /// </summary>
    public static class WorldFrame
    {
        /// <summary>A Unity world vector (x, y, z) in the xrfed world frame: (x, z, y).</summary>
        public static void FromUnity(double x, double y, double z, out double wx, out double wy, out double wz)
        {
            wx = x; wy = z; wz = y;
        }

        /// <summary>
        /// pose [7] (x_m, y_m, z_m, qw, qx, qy, qz; head -> world, xrfed world frame) of a camera at Unity position
        /// <paramref name="position"/> whose Unity right / up / forward unit vectors are given, written at
        /// <paramref name="offset"/> of <paramref name="dst"/>.
        /// </summary>
        public static void HeadPose(double[] position, double[] right, double[] up, double[] forward, float[] dst, int offset)
        {
            if (position == null || position.Length != 3 || right == null || right.Length != 3 || up == null || up.Length != 3
                || forward == null || forward.Length != 3)
                throw new ArgumentException("expected position, right, up and forward as 3 doubles each");
            if (dst == null || offset < 0 || dst.Length < offset + 7)
                throw new ArgumentException("expected room for 7 floats at offset " + offset);
            double px, py, pz, c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z;
            FromUnity(position[0], position[1], position[2], out px, out py, out pz);
            FromUnity(right[0], right[1], right[2], out c0x, out c0y, out c0z);
            FromUnity(up[0], up[1], up[2], out c1x, out c1y, out c1z);
            FromUnity(-forward[0], -forward[1], -forward[2], out c2x, out c2y, out c2z);
            var q = RotationToQuaternion(c0x, c0y, c0z, c1x, c1y, c1z, c2x, c2y, c2z);
            dst[offset] = (float)px; dst[offset + 1] = (float)py; dst[offset + 2] = (float)pz;
            for (int i = 0; i < 4; i++) dst[offset + 3 + i] = (float)q[i];
        }

        /// <summary>Unit quaternion (w, x, y, z) of the rotation whose columns are c0, c1, c2 (Shepperd's method),
        /// with w &gt;= 0.</summary>
        public static double[] RotationToQuaternion(double m00, double m10, double m20, double m01, double m11, double m21,
                                                    double m02, double m12, double m22)
        {
            double tr = m00 + m11 + m22, w, x, y, z;
            if (tr > 0)
            {
                double s = Math.Sqrt(tr + 1) * 2;
                w = 0.25 * s; x = (m21 - m12) / s; y = (m02 - m20) / s; z = (m10 - m01) / s;
            }
            else if (m00 > m11 && m00 > m22)
            {
                double s = Math.Sqrt(1 + m00 - m11 - m22) * 2;
                w = (m21 - m12) / s; x = 0.25 * s; y = (m01 + m10) / s; z = (m02 + m20) / s;
            }
            else if (m11 > m22)
            {
                double s = Math.Sqrt(1 + m11 - m00 - m22) * 2;
                w = (m02 - m20) / s; x = (m01 + m10) / s; y = 0.25 * s; z = (m12 + m21) / s;
            }
            else
            {
                double s = Math.Sqrt(1 + m22 - m00 - m11) * 2;
                w = (m10 - m01) / s; x = (m02 + m20) / s; y = (m12 + m21) / s; z = 0.25 * s;
            }
            double n = Math.Sqrt(w * w + x * x + y * y + z * z) * (w < 0 ? -1 : 1);
            return new[] { w / n, x / n, y / n, z / n };
        }
    }
}
