using System;
using System.Collections.Generic;
using System.Linq;
using Unity.MLAgents.Sensors;
using UnityEngine;
using XRFed.Sensors;

namespace XRFed.Agents
{
    /// <summary>
    /// The avatar's named sensors besides the camera: depth_m, gaze, audio, pose, imu, hands (profile permitting),
    /// plus labels, present and device -- built from the <see cref="XRAvatarAgent"/> on the same GameObject.
    /// </summary>
    [RequireComponent(typeof(XRAvatarAgent))]
    public class XRAvatarSensors : SensorComponent
    {
        /// <summary>Depth image size (pixels); sent PNG-compressed, 2 bytes per pixel of information.</summary>
        public int DepthWidth = 84, DepthHeight = 84;

        /// <summary>
        /// The XRFed/LinearDepth shader. The scene builder assigns it, so the saved scene references the shader and
        /// player builds include it (Shader.Find alone finds only shaders a build was told to keep).
        /// </summary>
        public Shader DepthShader;

        /// <inheritdoc/>
        public override ISensor[] CreateSensors()
        {
            var a = GetComponent<XRAvatarAgent>();
            var gaze = GetComponentInChildren<GazeProvider>();
            var audio = GetComponentInChildren<AudioRingBuffer>();
            var list = new List<ISensor>
            {
                new NamedVectorSensor("device", 1, v => v[0] = a.DeviceIndex),
                new NamedVectorSensor("labels", 6, a.FillLabels),
                new NamedVectorSensor("present", 10, a.FillPresent),
            };
            if (a.Modalities.Contains("depth"))
            {
                var shader = DepthShader != null ? DepthShader : Shader.Find(DepthSensor.ShaderName);
                if (shader == null)
                    throw new InvalidOperationException("XRAvatarSensors on '" + name + "': expected the " + DepthSensor.ShaderName
                        + " shader in DepthShader, got none (rebuild the scene with XRFed > Build Scene From Scenario...)");
                list.Add(new DepthSensor(a.HeadCamera, DepthWidth, DepthHeight, shader));
            }
            if (a.Modalities.Contains("gaze")) list.Add(new NamedVectorSensor("gaze", 8, v => { if (a.Has("gaze") && gaze != null) Array.Copy(gaze.Sample, v, 8); }));
            if (a.Modalities.Contains("pose")) list.Add(new NamedVectorSensor("pose", 7, v => { if (a.Has("pose")) a.FillPose(v); }));
            if (a.Modalities.Contains("imu")) list.Add(new NamedVectorSensor("imu", 6, v => { if (a.Has("imu")) a.FillImu(v); }));
            if (a.Modalities.Contains("hands")) list.Add(new NamedVectorSensor("hands", 156, v => { }));
            if (a.Modalities.Contains("audio") && audio != null)
            {
                int n = a.AudioSamplesPerStep;
                list.Add(new NamedVectorSensor("audio", a.AudioChannels * n, v => { if (a.Has("audio")) audio.CopyLatest(v, a.AudioChannels, n); }));
            }
            return list.ToArray();
        }
    }
}
