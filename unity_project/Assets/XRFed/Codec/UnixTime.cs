// UnityEngine-free: compiled with Mono in tests/bridge/test_unity_compile.py.
using System;

namespace XRFed.Codec
{
    /// <summary>Wall-clock time as the frame contract carries it: nanoseconds since the Unix epoch (UTC).</summary>
    public static class UnixTime
    {
        /// <summary>DateTime ticks (100 ns since 0001-01-01) of 1970-01-01T00:00:00Z.</summary>
        public const long EpochTicks = 621355968000000000L;

        /// <summary>Unix nanoseconds of a UTC DateTime's ticks (ticks count from year 1, not 1970).</summary>
        public static long TicksToUnixNs(long utcTicks) { return (utcTicks - EpochTicks) * 100L; }

        /// <summary>Now, in Unix nanoseconds (100 ns resolution).</summary>
        public static long NowNs() { return TicksToUnixNs(DateTime.UtcNow.Ticks); }
    }
}
