// Reference surface of NetMQ 4.0.x (NuGet NetMQ; github.com/zeromq/netmq tags 4.0.1.13 .. 4.0.2.1) -- DECLARATIONS ONLY
// (see UnityEngine.cs); only the XRFed.Streaming assembly (define constraint XRFED_NETMQ) compiles against it.
// Checked against src/NetMQ at tag 4.0.2.1: Sockets/PublisherSocket.cs `PublisherSocket(string? connectionString =
// null)`; NetMQSocket.cs `SocketOptions Options { get; }`, Bind(string), Connect(string), Dispose(); SocketOptions.cs
// `int SendHighWatermark`, `TimeSpan Linger`; NetMQConfig.cs `static void Cleanup(bool block = true)` (terminates the
// process-wide context; the next socket creates a new one); NetMQMessage.cs `NetMQMessage(int expectedFrameCount = 4)`,
// Append(byte[]); OutgoingSocketExtensions.cs `static bool TrySendMultipartMessage(this IOutgoingSocket, NetMQMessage)`.
using System;

namespace NetMQ
{
    public interface IOutgoingSocket { }

    public class SocketOptions
    {
        public int SendHighWatermark { get => default; set { } }
        public TimeSpan Linger { get => default; set { } }
    }

    public abstract class NetMQSocket : IOutgoingSocket, IDisposable
    {
        public SocketOptions Options => throw null;
        public void Bind(string address) { }
        public void Connect(string address) { }
        public void Dispose() { }
    }

    public class NetMQMessage
    {
        public NetMQMessage(int expectedFrameCount = 4) { }
        public void Append(byte[] buffer) { }
    }

    public static class NetMQConfig
    {
        public static void Cleanup(bool block = true) { }
    }

    public static class OutgoingSocketExtensions
    {
        public static bool TrySendMultipartMessage(this IOutgoingSocket socket, NetMQMessage message) => default;
    }
}

namespace NetMQ.Sockets
{
    public class PublisherSocket : NetMQSocket
    {
        public PublisherSocket(string connectionString = null) { }
    }
}
