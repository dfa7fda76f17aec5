using System.Collections.Generic;
using UnityEngine;
using UnityEngine.XR;
using UnityEngine.XR.OpenXR.Features.Interactions;

namespace XRFed.Sensors
{
    /// <summary>
    /// Eye gaze in the head frame: OpenXR eye tracking when a headset provides it (XR input device with the
    /// EyeTracking characteristic; EyeTrackingUsages.gazePosition / gazeRotation, or CommonUsages.eyesData from
    /// other providers), else the scripted gaze model (fixate the task script's look target, with the
    /// user's calibration bias and per-sample noise). Angles in radians, yaw = atan2(x, -z), pitch = atan2(y, -z),
    /// head frame +x right, +y up, -z forward, as bridge/frame.py defines them.
    /// </summary>
    public class GazeProvider : MonoBehaviour
    {
        /// <summary>The head (camera) transform.</summary>
        public Transform Head;
        /// <summary>World point the scripted model fixates (set by the task-script runner).</summary>
        public Vector3? LookTarget;
        /// <summary>Systematic calibration offset (yaw, pitch) in degrees.</summary>
        public Vector2 BiasDeg;
        /// <summary>Per-sample noise (RMS, degrees).</summary>
        public float PrecisionDeg = 0.5f;
        /// <summary>Distance along an OpenXR gaze ray taken as the fixation point (OpenXR gives no vergence), metres.</summary>
        public float GazeRayM = 2.0f;

        /// <summary>The last sample: yaw_rad, pitch_rad, origin (3, head frame), vergence_depth_m, pupil_mm, confidence.</summary>
        public readonly float[] Sample = new float[8];
        /// <summary>Whether the last sample is valid (tracker locked, eyes open).</summary>
        public bool Valid;
        /// <summary>True when the sample came from a real eye tracker.</summary>
        public bool FromHeadset;

        readonly List<InputDevice> m_Devices = new List<InputDevice>();

        void Update()
        {
            FromHeadset = TryHeadset();
            if (!FromHeadset) Scripted();
        }

        bool TryHeadset()
        {
            InputDevices.GetDevicesWithCharacteristics(InputDeviceCharacteristics.EyeTracking, m_Devices);
            foreach (var d in m_Devices)
            {
                // OpenXR (XR_EXT_eye_gaze_interaction, "Eye Gaze Interaction Profile" enabled in the OpenXR settings)
                // reports a gaze pose through EyeTrackingUsages, in tracking space -- the space of the head
                // camera's parent, which the XR camera tracking drives.
                Vector3 origin;
                Quaternion rotation;
                if (d.TryGetFeatureValue(EyeTrackingUsages.gazePosition, out origin)
                    && d.TryGetFeatureValue(EyeTrackingUsages.gazeRotation, out rotation))
                {
                    var space = Head.parent;
                    Vector3 o = space != null ? space.TransformPoint(origin) : origin;
                    Vector3 dir = rotation * Vector3.forward;
                    if (space != null) dir = space.TransformDirection(dir);
                    Fill(o + dir * GazeRayM, 1.0f);
                    return true;
                }
                // Other XR providers fill the legacy Eyes usage.
                Eyes eyes;
                Vector3 fixation;
                if (d.TryGetFeatureValue(CommonUsages.eyesData, out eyes) && eyes.TryGetFixationPoint(out fixation))
                {
                    Fill(Head.parent != null ? Head.parent.TransformPoint(fixation) : fixation, 1.0f);
                    return true;
                }
            }
            return false;
        }

        void Scripted()
        {
            Vector3 target = LookTarget ?? (Head.position + Head.forward * 2.0f);
            Vector3 local = Head.InverseTransformPoint(target);
            var q = Quaternion.Euler(-BiasDeg.y + Random.Range(-1f, 1f) * PrecisionDeg, BiasDeg.x + Random.Range(-1f, 1f) * PrecisionDeg, 0);
            Fill(Head.TransformPoint(q * local), 0.9f);
        }

        void Fill(Vector3 fixationWorldOrLocal, float confidence)
        {
            // Unity's view space is left-handed (+z forward); the contract's head frame is -z forward.
            Vector3 v = Head.InverseTransformPoint(fixationWorldOrLocal);
            float forward = Mathf.Max(v.z, 1e-3f);
            Sample[0] = Mathf.Atan2(v.x, forward);
            Sample[1] = Mathf.Atan2(v.y, forward);
            Sample[2] = 0; Sample[3] = 0; Sample[4] = 0;
            Sample[5] = Mathf.Min(v.magnitude, 1e4f);
            Sample[6] = 3.5f;
            Sample[7] = confidence;
            Valid = true;
        }
    }
}
