using Unity.MLAgents.Sensors;
using UnityEngine;

namespace XRFed.Sensors
{
    /// <summary>
    /// Metric depth along the optical axis in metres, float32, uncompressed ("depth_m", shape [1, H, W]): the
    /// camera renders linear eye depth into an RFloat render texture (XRFed/LinearDepth replacement shader) and the
    /// sensor reads it back. Exact metres cost 4 bytes per pixel on the wire: keep H x W small (see docs/unity.md).
    /// </summary>
    public class DepthSensor : ISensor
    {
        readonly Camera m_Camera;
        readonly int m_Width, m_Height;
        readonly float[] m_DepthM;
        readonly Shader m_Shader;
        RenderTexture m_Target;
        Texture2D m_Readback;

        /// <summary>A depth sensor of <paramref name="width"/> x <paramref name="height"/> pixels from <paramref name="camera"/>.</summary>
        public DepthSensor(Camera camera, int width, int height)
        {
            m_Camera = camera;
            m_Width = width;
            m_Height = height;
            m_DepthM = new float[width * height];
            m_Shader = Shader.Find("XRFed/LinearDepth");
        }

        /// <inheritdoc/>
        public ObservationSpec GetObservationSpec() { return ObservationSpec.Visual(1, m_Height, m_Width); }

        /// <inheritdoc/>
        public int Write(ObservationWriter writer)
        {
            for (int h = 0; h < m_Height; h++)
                for (int w = 0; w < m_Width; w++)
                    writer[0, h, w] = m_DepthM[h * m_Width + w];
            return m_DepthM.Length;
        }

        /// <inheritdoc/>
        public void Update()
        {
            if (m_Target == null)
            {
                m_Target = new RenderTexture(m_Width, m_Height, 24, RenderTextureFormat.RFloat);
                m_Readback = new Texture2D(m_Width, m_Height, TextureFormat.RFloat, false);
            }
            var previous = m_Camera.targetTexture;
            m_Camera.targetTexture = m_Target;
            if (m_Shader != null) m_Camera.RenderWithShader(m_Shader, "RenderType");
            else m_Camera.Render();
            m_Camera.targetTexture = previous;
            var active = RenderTexture.active;
            RenderTexture.active = m_Target;
            m_Readback.ReadPixels(new Rect(0, 0, m_Width, m_Height), 0, 0);
            RenderTexture.active = active;
            var raw = m_Readback.GetRawTextureData<float>();
            // Texture rows start at the bottom; observations start at the top (row 0 = top, as the frame contract).
            for (int h = 0; h < m_Height; h++)
                for (int w = 0; w < m_Width; w++)
                {
                    float d = raw[(m_Height - 1 - h) * m_Width + w];
                    m_DepthM[h * m_Width + w] = d >= m_Camera.farClipPlane * 0.999f ? float.PositiveInfinity : d;
                }
        }

        /// <inheritdoc/>
        public byte[] GetCompressedObservation() { return null; }

        /// <inheritdoc/>
        public void Reset() { }

        /// <inheritdoc/>
        public CompressionSpec GetCompressionSpec() { return CompressionSpec.Default(); }

        /// <inheritdoc/>
        public string GetName() { return "depth_m"; }
    }
}
