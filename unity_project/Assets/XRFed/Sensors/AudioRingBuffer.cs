using UnityEngine;

namespace XRFed.Sensors
{
    /// <summary>
    /// Keeps the most recent audio heard by the AudioListener on this GameObject (OnAudioFilterRead runs on the
    /// audio thread), so the avatar's "audio" sensor can send exactly one step of samples, channel-major
    /// [channels * samples], full scale 1.0 -- the layout of the embedded scene's microphone array.
    /// </summary>
    [RequireComponent(typeof(AudioListener))]
    public class AudioRingBuffer : MonoBehaviour
    {
        /// <summary>Seconds of audio kept.</summary>
        public float CapacityS = 1.0f;

        float[] m_Ring;
        int m_Write, m_Channels = 2;
        readonly object m_Lock = new object();

        /// <summary>Output sample rate of the audio system (Hz).</summary>
        public int SampleRateHz { get { return AudioSettings.outputSampleRate; } }

        /// <summary>Channels of the audio output (the listener's "microphones").</summary>
        public int Channels { get { return m_Channels; } }

        void Awake()
        {
            m_Ring = new float[Mathf.CeilToInt(CapacityS * AudioSettings.outputSampleRate) * 8];
        }

        void OnAudioFilterRead(float[] data, int channels)
        {
            lock (m_Lock)
            {
                m_Channels = channels;
                for (int i = 0; i < data.Length; i++)
                {
                    m_Ring[m_Write] = data[i];
                    m_Write = (m_Write + 1) % m_Ring.Length;
                }
            }
        }

        /// <summary>Copy the last <paramref name="samples"/> frames per channel into <paramref name="dst"/>,
        /// channel-major (dst[c * samples + n]), using at most <paramref name="channels"/> channels.</summary>
        public void CopyLatest(float[] dst, int channels, int samples)
        {
            lock (m_Lock)
            {
                int ch = Mathf.Min(channels, m_Channels);
                int start = m_Write - samples * m_Channels;
                for (int n = 0; n < samples; n++)
                    for (int c = 0; c < ch; c++)
                    {
                        int idx = ((start + n * m_Channels + c) % m_Ring.Length + m_Ring.Length) % m_Ring.Length;
                        dst[c * samples + n] = m_Ring[idx];
                    }
            }
        }
    }
}
