using System;
using Unity.MLAgents.SideChannels;
using XRFed.Codec;

namespace XRFed.SideChannels
{
    /// <summary>
    /// The xrfed side channel: canonical JSON messages (see <see cref="XrfedMessage"/>) on GUID
    /// <see cref="XrfedSchema.ChannelId"/>, the same bytes Python's bridge/unity/codec.py reads and writes.
    /// Register it once (XRFedScene does, in Awake) with SideChannelManager.RegisterSideChannel.
    /// </summary>
    public class XrfedSideChannel : SideChannel
    {
        /// <summary>Raised on the main thread for every valid message from Python.</summary>
        public event Action<XrfedMessage> MessageReceived;

        /// <summary>Create the channel with xrfed's fixed GUID.</summary>
        public XrfedSideChannel()
        {
            ChannelId = new Guid(XrfedSchema.ChannelId);
        }

        /// <inheritdoc/>
        protected override void OnMessageReceived(IncomingMessage msg)
        {
            XrfedMessage message;
            try
            {
                message = XrfedMessage.Decode(msg.GetRawBytes());
            }
            catch (FormatException e)
            {
                UnityEngine.Debug.LogError("xrfed side channel: " + e.Message);
                Send(new XrfedMessage("event", new System.Collections.Generic.Dictionary<string, object>
                    { { "name", "protocol_error" }, { "detail", e.Message } }));
                return;
            }
            if (MessageReceived != null) MessageReceived(message);
        }

        /// <summary>Queue a message; it leaves with the next exchange with Python.</summary>
        public void Send(XrfedMessage message)
        {
            using (var outgoing = new OutgoingMessage())
            {
                outgoing.SetRawBytes(message.Encode());
                QueueMessageToSend(outgoing);
            }
        }
    }
}
