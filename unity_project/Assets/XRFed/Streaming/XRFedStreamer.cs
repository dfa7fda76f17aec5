// Publishes an avatar camera (RGB + depth) and head pose with the xrfed stream protocol over NetMQ, from the Editor,
// a desktop player or an Android/Quest build. Requires the NetMQ package (NuGet NetMQ 4.x + AsyncIO, placed in
// Assets/Plugins). The wire format lives in StreamCodec.cs (UnityEngine-free, tested with Mono).
using System.Collections.Generic;
using NetMQ;
using NetMQ.Sockets;
using UnityEngine;
using UnityEngine.Rendering;

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
            if (connect) _socket.Connect(endpoint); else _socket.Bind(endpoint);
            _session = System.Guid.NewGuid().ToString("N").Substring(0, 16);
            _target = new RenderTexture(width, height, 24, RenderTextureFormat.ARGB32);
            _readback = new Texture2D(width, height, TextureFormat.RGB24, false);
        }

        void OnDisable()
        {
            if (_socket != null) { _socket.Dispose(); _socket = null; }
            NetMQConfig.Cleanup(false);
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
            // Head pose in the world frame of the frame contract (right-handed, z up, metres). Unity's world is
            // left-handed y up: (x, y, z)_unity -> (z, -x, y)_xrfed. The head frame is +x right, +y up, -z forward,
            // so its axes are the camera's right, up and -forward; their images form the rotation's columns.
            var t = eyeCamera.transform;
            var p = ToXrfed(t.position);
            var q = MatrixToQuaternion(ToXrfed(t.right), ToXrfed(t.up), ToXrfed(-t.forward));
            parts.Add(StreamPart.Float32("pose", new[] { p.x, p.y, p.z, q[0], q[1], q[2], q[3] }, new[] { 7 },
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

        static Vector3 ToXrfed(Vector3 u)
        {
            return new Vector3(u.z, -u.x, u.y);
        }

        /// <summary>Unit quaternion (w, x, y, z) of the rotation whose columns are c0, c1, c2 (Shepperd's method).</summary>
        static float[] MatrixToQuaternion(Vector3 c0, Vector3 c1, Vector3 c2)
        {
            float m00 = c0.x, m10 = c0.y, m20 = c0.z, m01 = c1.x, m11 = c1.y, m21 = c1.z, m02 = c2.x, m12 = c2.y, m22 = c2.z;
            float tr = m00 + m11 + m22, w, x, y, z;
            if (tr > 0f)
            {
                float s = Mathf.Sqrt(tr + 1f) * 2f;
                w = 0.25f * s; x = (m21 - m12) / s; y = (m02 - m20) / s; z = (m10 - m01) / s;
            }
            else if (m00 > m11 && m00 > m22)
            {
                float s = Mathf.Sqrt(1f + m00 - m11 - m22) * 2f;
                w = (m21 - m12) / s; x = 0.25f * s; y = (m01 + m10) / s; z = (m02 + m20) / s;
            }
            else if (m11 > m22)
            {
                float s = Mathf.Sqrt(1f + m11 - m00 - m22) * 2f;
                w = (m02 - m20) / s; x = (m01 + m10) / s; y = 0.25f * s; z = (m12 + m21) / s;
            }
            else
            {
                float s = Mathf.Sqrt(1f + m22 - m00 - m11) * 2f;
                w = (m10 - m01) / s; x = (m02 + m20) / s; y = (m12 + m21) / s; z = 0.25f * s;
            }
            float n = Mathf.Sqrt(w * w + x * x + y * y + z * z);
            return new[] { w / n, x / n, y / n, z / n };
        }

        static long NowNs()
        {
            return (System.DateTime.UtcNow.Ticks - 621355968000000000L) * 100L;
        }
    }
}
