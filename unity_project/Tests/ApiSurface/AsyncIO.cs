// Reference surface of AsyncIO 0.1.69 (NuGet AsyncIO, NetMQ's dependency) -- DECLARATIONS ONLY (see UnityEngine.cs).
// Checked against AsyncIO's ForceDotNet.cs: `public static class ForceDotNet { public static void Force(); }`.
namespace AsyncIO
{
    public static class ForceDotNet
    {
        public static void Force() { }
    }
}
