using System;
using Unity.MLAgents.Sensors;
using UnityEngine;
using XRFed.Codec;

namespace XRFed.Sensors
{
    /// <summary>
    /// Metric depth along the optical axis ("depth_m"), sent as ML-Agents sends camera images: a PNG, here an 8-bit
    /// RGB one carrying millimetres (<see cref="DepthPng"/>: R = mm &gt;&gt; 8, G = mm &amp; 0xFF, B = 0; 65535 = no return),
    /// with <c>compressedChannelMapping = {0, 1, -1}</c>, so Python receives shape (2, H, W) = (R/255, G/255).
    /// Quantization: 1 mm steps, |error| &lt;= 0.5 mm up to 65.534 m.
    /// The camera renders with the XRFed/LinearDepth replacement shader (built-in render pipeline), which writes
    /// linear eye depth in metres -- the view-space distance along the optical axis, -z_view, interpolated
    /// perspective-correctly, so it is exact per pixel up to float32 -- into an RFloat render texture cleared to 0;
    /// 0 (no geometry) and depths at or beyond the far plane become "no return".
    /// </summary>
    public class DepthSensor : ISensor
    {
        /// <summary>Name of the replacement shader (Shaders/LinearDepth.shader).</summary>
        public const string ShaderName = "XRFed/LinearDepth";

        readonly Camera m_Camera;
        readonly int m_Width, m_Height;
        readonly float[] m_DepthM;      // texture order: row 0 = bottom
        readonly byte[] m_Rgb;          // texture order, 3 bytes per pixel
        readonly Shader m_Shader;
        RenderTexture m_Target;
        Texture2D m_Readback, m_Png;

        /// <summary>A depth sensor of <paramref name="width"/> x <paramref name="height"/> pixels from
        /// <paramref name="camera"/>, rendered with <paramref name="shader"/> (XRFed/LinearDepth).</summary>
        public DepthSensor(Camera camera, int width, int height, Shader shader)
        {
            if (camera == null) throw new ArgumentNullException("camera", "expected the head camera, got null");
            if (shader == null) throw new ArgumentNullException("shader", "expected the " + ShaderName + " shader, got null");
            if (width <= 0 || height <= 0 || width > 4096 || height > 4096)
                throw new ArgumentException("expected a depth image of 1..4096 pixels a side, got " + width + "x" + height);
            m_Camera = camera;
            m_Width = width;
            m_Height = height;
            m_Shader = shader;
            m_DepthM = new float[width * height];
            m_Rgb = new byte[3 * width * height];
        }

        /// <inheritdoc/>
        public ObservationSpec GetObservationSpec() { return ObservationSpec.Visual(2, m_Height, m_Width); }

        /// <inheritdoc/>
        public int Write(ObservationWriter writer)
        {
            // The uncompressed form (inference, or a trainer without PNG support) equals the decoded PNG:
            // channel 0 = high byte / 255, channel 1 = low byte / 255; observation row 0 = top.
            for (int h = 0; h < m_Height; h++)
                for (int w = 0; w < m_Width; w++)
                {
                    float hi, lo;
                    DepthPng.Channels(DepthPng.Code(m_DepthM[(m_Height - 1 - h) * m_Width + w]), out hi, out lo);
                    writer[0, h, w] = hi;
                    writer[1, h, w] = lo;
                }
            return 2 * m_Width * m_Height;
        }

        /// <inheritdoc/>
        public void Update()
        {
            if (m_Target == null)
            {
                m_Target = new RenderTexture(m_Width, m_Height, 24, RenderTextureFormat.RFloat);
                m_Readback = new Texture2D(m_Width, m_Height, TextureFormat.RFloat, false);
                m_Png = new Texture2D(m_Width, m_Height, TextureFormat.RGB24, false);
            }
            var previous = m_Camera.targetTexture;
            var clearFlags = m_Camera.clearFlags;
            var background = m_Camera.backgroundColor;
            m_Camera.targetTexture = m_Target;
            m_Camera.clearFlags = CameraClearFlags.SolidColor;
            m_Camera.backgroundColor = Color.clear; // 0 m = nothing rendered there
            m_Camera.RenderWithShader(m_Shader, "RenderType");
            m_Camera.targetTexture = previous;
            m_Camera.clearFlags = clearFlags;
            m_Camera.backgroundColor = background;
            var active = RenderTexture.active;
            RenderTexture.active = m_Target;
            m_Readback.ReadPixels(new Rect(0, 0, m_Width, m_Height), 0, 0);
            RenderTexture.active = active;
            var raw = m_Readback.GetRawTextureData<float>();
            float far = m_Camera.farClipPlane;
            for (int i = 0; i < m_DepthM.Length; i++)
            {
                float d = raw[i];
                m_DepthM[i] = d <= 0f || d >= far ? float.PositiveInfinity : d;
            }
        }

        /// <inheritdoc/>
        public byte[] GetCompressedObservation()
        {
            // Texture rows start at the bottom and EncodeToPNG writes the top row first, as CameraSensor relies on.
            DepthPng.EncodeRgb24(m_DepthM, m_Width, m_Height, m_Rgb);
            m_Png.LoadRawTextureData(m_Rgb);
            m_Png.Apply(false);
            return m_Png.EncodeToPNG();
        }

        /// <inheritdoc/>
        public void Reset() { }

        /// <inheritdoc/>
        public CompressionSpec GetCompressionSpec()
        {
            return new CompressionSpec(SensorCompressionType.PNG, DepthPng.ChannelMapping);
        }

        /// <inheritdoc/>
        public string GetName() { return "depth_m"; }
    }
}
