using System;
using Unity.MLAgents.Sensors;

namespace XRFed.Sensors
{
    /// <summary>
    /// A rank-1 float sensor with a fixed name ("gaze", "pose", "imu", "hands", "labels", "present", "device",
    /// "audio"), filled by a callback each step. Python maps observations back by these names
    /// (bridge/unity/observations.py), so the names are the contract.
    /// </summary>
    public class NamedVectorSensor : ISensor
    {
        readonly string m_Name;
        readonly float[] m_Values;
        readonly Action<float[]> m_Fill;

        /// <summary>A sensor of <paramref name="size"/> floats named <paramref name="name"/>.</summary>
        public NamedVectorSensor(string name, int size, Action<float[]> fill)
        {
            m_Name = name;
            m_Values = new float[size];
            m_Fill = fill;
        }

        /// <inheritdoc/>
        public ObservationSpec GetObservationSpec() { return ObservationSpec.Vector(m_Values.Length); }

        /// <inheritdoc/>
        public int Write(ObservationWriter writer)
        {
            writer.AddList(m_Values);
            return m_Values.Length;
        }

        /// <inheritdoc/>
        public byte[] GetCompressedObservation() { return null; }

        /// <inheritdoc/>
        public void Update()
        {
            Array.Clear(m_Values, 0, m_Values.Length);
            m_Fill(m_Values);
        }

        /// <inheritdoc/>
        public void Reset() { }

        /// <inheritdoc/>
        public CompressionSpec GetCompressionSpec() { return CompressionSpec.Default(); }

        /// <inheritdoc/>
        public string GetName() { return m_Name; }
    }
}
