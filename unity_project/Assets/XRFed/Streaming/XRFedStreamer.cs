// Publishes an avatar camera (RGB) and head pose with the xrfed stream protocol over NetMQ, from the Editor, a desktop
// player or an Android/Quest build. This folder is its own assembly (XRFed.Streaming.asmdef) with the define
// constraint XRFED_NETMQ: it compiles only once NetMQ 4.0.x with AsyncIO is in the project and XRFED_NETMQ is in
// Player Settings > Scripting Define Symbols (unity_project/README.md), so the rest of the project never needs NetMQ.
// The wire format lives in StreamCodec.cs (UnityEngine-free, tested with Mono).
using System.Collections.Generic;
using NetMQ;
using NetMQ.Sockets;
using UnityEngine;
using XRFed.Codec;

namespace XRFed.Streaming
{
    /// <summary>Streams one device's frames (topic xrfed/&lt;deviceId&gt;/frame) at <see cref="rateHz"/>.
    /// On a headset, set <see cref="connect"/> to the workstation's bound address (it binds, the headset connects).</summary>
    public class XRFedStreamer : MonoBehaviour
    {
        /// <summary>Device id (no '/' or spaces).</summary>
        public string deviceId = "quest_0";
        /// <summary>Wearer id.</summary>
        public string userId = "user_0";
        /// <summary>Device profile name from bridge/data/devices.yaml.</summary>
        public string profile = "meta_quest_3";
        /// <summary>Publisher id in topics and headers.</summary>
        public string publisherId = "unity";
        /// <summary>Endpoint, e.g. tcp://192.168.1.20:5560.</summary>
        public string endpoint = "tcp://*:5560";
        /// <summary>Connect to <see cref="endpoint"/> instead of binding it (headset -> workstation).</summary>
        public bool connect = false;
        /// <summary>Frames per second.</summary>
        public float rateHz = 10f;
        /// <summary>The avatar's eye camera.</summary>
        public Camera eyeCamera;
        /// <summary>Capture size.</summary>
        public int width = 128, height = 128;
        /// <summary>JPEG-compress RGB (quality 85) instead of sending raw pixels.</summary>
        public bool jpeg = true;

        // NetMQ's context is process-wide: only the last streamer to stop may tear it down.
        static int s_Open;

        PublisherSocket _socket;
        RenderTexture _target;
        Texture2D _readback;
        string _session;
        long _seq, _hbSeq, _step;
        float _nextFrame, _nextHeartbeat;

        void OnEnable()
        {
            AsyncIO.ForceDotNet.Force();
            _socket = new PublisherSocket();
            _socket.Options.SendHighWatermark = 16;
            _socket.Options.Linger = System.TimeSpan.Zero;
            try
            {
                if (connect) _socket.Connect(endpoint); else _socket.Bind(endpoint);
            }
            catch
            {
                _socket.Dispose();
                _socket = null;
                throw;
            }
            s_Open++;
            _session = System.Guid.NewGuid().ToString("N").Substring(0, 16);
            _target = new RenderTexture(width, height, 24, RenderTextureFormat.ARGB32);
            _readback = new Texture2D(width, height, TextureFormat.RGB24, false);
        }

        void OnDisable()
        {
            if (_socket != null)
            {
                _socket.Dispose();
                _socket = null;
                if (--s_Open == 0) NetMQConfig.Cleanup(false); // a later OnEnable gets a fresh context
            }
            if (_target != null) { _target.Release(); _target = null; }
        }

        void Update()
        {
            if (_socket == null || eyeCamera == null) return;
            if (Time.unscaledTime >= _nextHeartbeat) SendHeartbeat();
            if (Time.unscaledTime < _nextFrame) return;
            _nextFrame = Time.unscaledTime + 1f / rateHz;
            SendFrame();
        }

        void SendFrame()
        {
            var previous = eyeCamera.targetTexture;
            eyeCamera.targetTexture = _target;
            eyeCamera.Render();
            eyeCamera.targetTexture = previous;
            RenderTexture.active = _target;
            _readback.ReadPixels(new Rect(0, 0, width, height), 0, 0);
            RenderTexture.active = null;

            var parts = new List<StreamPart>();
            if (jpeg)
            {
                // EncodeToJPG writes the image top row first, as the protocol's rgb is (row 0 at the top).
                parts.Add(new StreamPart { Name = "rgb", DType = "uint8", Shape = new[] { height, width, 3 },
                                           Encoding = "jpeg", Payload = _readback.EncodeToJPG(85) });
            }
            else
            {
                // Unity textures start at the bottom row; the protocol's rgb starts at the top.
                var src = _readback.GetRawTextureData();
                var rgb = new byte[src.Length];
                int row = width * 3;
                for (int y = 0; y < height; y++) System.Buffer.BlockCopy(src, (height - 1 - y) * row, rgb, y * row, row);
                parts.Add(new StreamPart { Name = "rgb", DType = "uint8", Shape = new[] { height, width, 3 }, Data = rgb });
            }
            // Head pose (head -> world) in the frame contract's world frame, by the same convention as the
            // ML-Agents avatar (XRFed.Codec.WorldFrame: Unity (x, y, z) -> xrfed (x, z, y)).
            var t = eyeCamera.transform;
            var pose = new float[7];
            WorldFrame.HeadPose(D(t.position), D(t.right), D(t.up), D(t.forward), pose, 0);
            parts.Add(StreamPart.Float32("pose", pose, new[] { 7 },
                                         "fields: x_m,y_m,z_m,qw,qx,qy,qz (world frame, head -> world)"));

            var header = new Dictionary<string, object>
            {
                { "publisher", publisherId }, { "session", _session }, { "seq", _seq }, { "device_id", deviceId },
                { "user_id", userId }, { "profile", profile }, { "channel", "frame" }, { "step", _step },
                { "sim_time_s", (double)Time.timeAsDouble }, { "wall_time_ns", NowNs() }, { "sent_ns", NowNs() },
                { "camera_fov_y_deg", (double)eyeCamera.fieldOfView }, { "room", null },
                { "labels", new Dictionary<string, object>() }, { "active_tasks", new List<object>() },
                { "events", new List<object>() },
            };
            var msg = StreamCodec.EncodeFrame(header, parts);
            var mp = new NetMQMessage();
            foreach (var frame in msg) mp.Append(frame);
            if (_socket.TrySendMultipartMessage(mp)) { _seq++; _step++; }
        }

        void SendHeartbeat()
        {
            _nextHeartbeat = Time.unscaledTime + 1f;
            var devices = new List<object> { new Dictionary<string, object> {
                { "device_id", deviceId }, { "user_id", userId }, { "profile", profile } } };
            var last = new Dictionary<string, object>();
            if (_seq > 0) last[StreamCodec.FrameTopic(deviceId)] = _seq - 1;
            var msg = StreamCodec.EncodeHeartbeat(publisherId, _session, _hbSeq++, NowNs(), last, devices, 1.0 / rateHz);
            var mp = new NetMQMessage();
            foreach (var frame in msg) mp.Append(frame);
            _socket.TrySendMultipartMessage(mp);
        }

        static double[] D(Vector3 u) { return new double[] { u.x, u.y, u.z }; }

        static long NowNs()
        {
            return UnixTime.NowNs();
        }
    }
}
