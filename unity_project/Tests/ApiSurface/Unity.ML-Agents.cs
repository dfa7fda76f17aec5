// Reference surface of com.unity.ml-agents 3.x / 4.0 (assembly Unity.ML-Agents) -- DECLARATIONS ONLY (see
// UnityEngine.cs). Checked against the package's C# sources (github.com/Unity-Technologies/ml-agents,
// com.unity.ml-agents/Runtime) and docs.unity3d.com/Packages/com.unity.ml-agents@3.0/api:
//   Sensors/ObservationSpec.cs: Visual(int channels, int height, int width, ObservationType = Default) -- channels
//     FIRST since 3.0 (2.x had (height, width, channels)); Vector(int length, ObservationType = Default).
//   Sensors/ObservationWriter.cs: indexer this[int ch, int h, int w] { set; } (3.0 API page lists this[int],
//     this[int, int], this[int, int, int]); AddList(IList<float> data, int writeOffset = 0).
//   Sensors/CompressionSpec.cs: struct; ctor (SensorCompressionType, int[] compressedChannelMapping = null);
//     static Default(). Sensors/ISensor.cs: GetObservationSpec, Write, GetCompressedObservation, Update, Reset,
//     GetCompressionSpec, GetName. Sensors/SensorComponent.cs: abstract ISensor[] CreateSensors().
//   Sensors/CameraSensorComponent.cs: Camera, SensorName, Width, Height, CompressionType (default PNG),
//     RuntimeCameraEnable ("Disabled by default": the camera is switched off at runtime unless set).
//   Agent.cs: protected virtual OnEnable(); public virtual OnEpisodeBegin(), CollectObservations(VectorSensor),
//     OnActionReceived(ActionBuffers); StepCount. Policies/BehaviorParameters.cs: BehaviorName, BrainParameters,
//     BehaviorType. Policies/BrainParameters.cs: VectorObservationSize. DecisionRequester.cs: DecisionPeriod.
//   Academy.cs: Instance, IsInitialized, EnvironmentParameters, `public event Action OnEnvironmentReset`,
//     `public event Action<int> AgentPreStep`. EnvironmentParameters.cs: RegisterCallback(string, Action<float>).
//   SideChannels/SideChannel.cs: ChannelId { get; protected set; }, `protected abstract void
//     OnMessageReceived(IncomingMessage msg)`, `protected void QueueMessageToSend(OutgoingMessage msg)`;
//   SideChannels/SideChannelManager.cs: RegisterSideChannel / UnregisterSideChannel(SideChannel);
//   IncomingMessage.GetRawBytes(); OutgoingMessage : IDisposable, SetRawBytes(byte[]).
using System;
using System.Collections.Generic;
using Unity.MLAgents.Actuators;
using Unity.MLAgents.Policies;
using Unity.MLAgents.Sensors;
using UnityEngine;

namespace Unity.MLAgents.Actuators
{
    public readonly struct ActionBuffers { }
}

namespace Unity.MLAgents.Sensors
{
    public enum SensorCompressionType { None = 0, PNG = 1 }
    public enum ObservationType { Default = 0, GoalSignal = 1 }

    public struct ObservationSpec
    {
        public static ObservationSpec Vector(int length, ObservationType obsType = ObservationType.Default) => default;
        public static ObservationSpec Visual(int channels, int height, int width, ObservationType obsType = ObservationType.Default) => default;
    }

    public struct CompressionSpec
    {
        public CompressionSpec(SensorCompressionType sensorCompressionType, int[] compressedChannelMapping = null) { }
        public static CompressionSpec Default() => default;
    }

    public class ObservationWriter
    {
        internal ObservationWriter() { }
        public float this[int index] { set { } }
        public float this[int ch, int h, int w] { set { } }
        public void AddList(IList<float> data, int writeOffset = 0) { }
    }

    public interface ISensor
    {
        ObservationSpec GetObservationSpec();
        int Write(ObservationWriter writer);
        byte[] GetCompressedObservation();
        void Update();
        void Reset();
        CompressionSpec GetCompressionSpec();
        string GetName();
    }

    public class VectorSensor { }

    public abstract class SensorComponent : MonoBehaviour
    {
        public abstract ISensor[] CreateSensors();
    }

    public class CameraSensorComponent : SensorComponent
    {
        public Camera Camera { get => throw null; set { } }
        public string SensorName { get => default; set { } }
        public int Width { get => default; set { } }
        public int Height { get => default; set { } }
        public SensorCompressionType CompressionType { get => default; set { } }
        public bool RuntimeCameraEnable { get => default; set { } }
        public override ISensor[] CreateSensors() => throw null;
    }
}

namespace Unity.MLAgents.Policies
{
    public enum BehaviorType { Default = 0, HeuristicOnly = 1, InferenceOnly = 2 }

    public class BrainParameters
    {
        public int VectorObservationSize;
    }

    public class BehaviorParameters : MonoBehaviour
    {
        public string BehaviorName { get => default; set { } }
        public BrainParameters BrainParameters { get => throw null; internal set { } }
        public BehaviorType BehaviorType { get => default; set { } }
    }
}

namespace Unity.MLAgents
{
    public class Agent : MonoBehaviour
    {
        public int StepCount => default;
        protected virtual void OnEnable() { }
        public virtual void OnEpisodeBegin() { }
        public virtual void CollectObservations(VectorSensor sensor) { }
        public virtual void OnActionReceived(ActionBuffers actions) { }
    }

    public class DecisionRequester : MonoBehaviour
    {
        public int DecisionPeriod = 5;
    }

    public sealed class EnvironmentParameters
    {
        internal EnvironmentParameters() { }
        public void RegisterCallback(string key, Action<float> action) { }
    }

    public class Academy : IDisposable
    {
        public static Academy Instance => throw null;
        public static bool IsInitialized => default;
        public EnvironmentParameters EnvironmentParameters => throw null;
#pragma warning disable 67 // declared, never raised: declarations only
        public event Action OnEnvironmentReset;
        public event Action<int> AgentPreStep;
#pragma warning restore 67
        public void Dispose() { }
    }
}

namespace Unity.MLAgents.SideChannels
{
    public class IncomingMessage
    {
        public byte[] GetRawBytes() => throw null;
    }

    public class OutgoingMessage : IDisposable
    {
        public OutgoingMessage() { }
        public void SetRawBytes(byte[] data) { }
        public void Dispose() { }
    }

    public abstract class SideChannel
    {
        public Guid ChannelId { get; protected set; }
        protected abstract void OnMessageReceived(IncomingMessage msg);
        protected void QueueMessageToSend(OutgoingMessage msg) { }
    }

    public static class SideChannelManager
    {
        public static void RegisterSideChannel(SideChannel sideChannel) { }
        public static void UnregisterSideChannel(SideChannel sideChannel) { }
    }
}
