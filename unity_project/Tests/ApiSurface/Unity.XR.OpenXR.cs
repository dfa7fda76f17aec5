// Reference surface of com.unity.xr.openxr 1.13 (assembly Unity.XR.OpenXR) -- DECLARATIONS ONLY (see UnityEngine.cs).
// Checked against docs.unity3d.com/Packages/com.unity.xr.openxr@1.13 (and @1.18) API:
//   UnityEngine.XR.OpenXR.Features.Interactions.EyeTrackingUsages -- public static class; fields
//   `public static InputFeatureUsage<Vector3> gazePosition`, `public static InputFeatureUsage<Quaternion> gazeRotation`
//   (direction = gazeRotation * Vector3.forward), filled when the Eye Gaze Interaction profile is enabled.
using UnityEngine;
using UnityEngine.XR;

namespace UnityEngine.XR.OpenXR.Features.Interactions
{
    public static class EyeTrackingUsages
    {
        public static InputFeatureUsage<Vector3> gazePosition;
        public static InputFeatureUsage<Quaternion> gazeRotation;
    }
}
