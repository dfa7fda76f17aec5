// Reference surface of UnityEngine (Unity 6000.0) -- DECLARATIONS ONLY, for compiling unity_project's scripts with
// Mono's mcs in CI (tests/bridge/test_unity_compile.py). Nothing here runs: bodies are `throw null` / `=> default`.
// Only what the scripts use is declared; a script calling anything else fails to compile, as in Unity.
// Checked against Unity 6 Scripting Reference (docs.unity3d.com/6000.0/Documentation/ScriptReference/<Type>.html):
//   Object (name, ==/!=/bool conversion -- the "fake null" overloads, FindFirstObjectByType<T>(),
//     FindObjectsByType<T>(FindObjectsSortMode)), Component / Behaviour / MonoBehaviour (GetComponent<T>,
//     GetComponentInParent<T>, GetComponentInChildren<T>, enabled), GameObject (ctor(string), AddComponent<T>,
//     SetActive, Find, CreatePrimitive, scene), Transform (position, rotation, localPosition, localScale, forward,
//     right, up, parent, SetParent(Transform, bool), TransformPoint, InverseTransformPoint, TransformDirection,
//     InverseTransformDirection), Vector2 / Vector3 / Quaternion (operators, Euler, Inverse, LookRotation, Slerp,
//     ToAngleAxis, MoveTowards), Mathf, Time, Physics.Raycast(Vector3, Vector3, out RaycastHit, float),
//     Physics.gravity, Random (Range(float, float), Range(int, int), value, InitState), Color, Rect, Debug,
//     Application (unityVersion, dataPath), RequireComponent.
//   Camera (fieldOfView, targetTexture, farClipPlane, clearFlags, backgroundColor, Render(),
//     RenderWithShader(Shader, string)), CameraClearFlags, Shader.Find(string), RenderTexture(int, int, int,
//     RenderTextureFormat), RenderTexture.active / Release(), Texture2D(int, int, TextureFormat, bool), ReadPixels(Rect,
//     int, int), GetRawTextureData() / GetRawTextureData<T>() (NativeArray<T>), LoadRawTextureData(byte[]),
//     Apply(bool), ImageConversion.EncodeToPNG / EncodeToJPG(Texture2D, int) (extension methods), TextureFormat
//     (RGB24 = 3, RFloat = 18), RenderTextureFormat (ARGB32 = 0, RFloat = 14).
//   AudioListener, AudioSettings.outputSampleRate, Light (type, range, intensity, color), LightType, TextMesh (text,
//     characterSize, anchor, color), TextAnchor, TextAsset.text, PrimitiveType, SceneManagement.Scene.name.
//   UnityEngine.XR: InputDevices.GetDevicesWithCharacteristics(InputDeviceCharacteristics, List<InputDevice>),
//     InputDevice.TryGetFeatureValue(InputFeatureUsage<T>, out T) for Vector3 / Quaternion / Eyes,
//     InputDeviceCharacteristics.EyeTracking, CommonUsages.eyesData, Eyes.TryGetFixationPoint(out Vector3).
//   Unity.Collections.NativeArray<T> (indexer, Length).
using System;
using System.Collections.Generic;

namespace Unity.Collections
{
    public struct NativeArray<T> where T : struct
    {
        public int Length => default;
        public T this[int index] { get => default; set { } }
    }
}

namespace UnityEngine.SceneManagement
{
    public struct Scene
    {
        public string name => default;
    }
}

namespace UnityEngine
{
    public enum FindObjectsSortMode { None = 0, InstanceID = 1 }
    public enum PrimitiveType { Sphere = 0, Capsule = 1, Cylinder = 2, Cube = 3, Plane = 4, Quad = 5 }
    public enum LightType { Spot = 0, Directional = 1, Point = 2, Rectangle = 3, Disc = 4 }
    public enum CameraClearFlags { Skybox = 1, Color = 2, SolidColor = 2, Depth = 3, Nothing = 4 }
    public enum TextAnchor { UpperLeft, UpperCenter, UpperRight, MiddleLeft, MiddleCenter, MiddleRight, LowerLeft, LowerCenter, LowerRight }
    public enum TextureFormat { RGB24 = 3, RFloat = 18 }
    public enum RenderTextureFormat { ARGB32 = 0, RFloat = 14 }

    public class Object
    {
        public string name { get => default; set { } }
        public static bool operator ==(Object x, Object y) => default;
        public static bool operator !=(Object x, Object y) => default;
        public static implicit operator bool(Object exists) => default;
        public override bool Equals(object other) => default;
        public override int GetHashCode() => default;
        public static T FindFirstObjectByType<T>() where T : Object => throw null;
        public static T[] FindObjectsByType<T>(FindObjectsSortMode sortMode) where T : Object => throw null;
    }

    public class Component : Object
    {
        public GameObject gameObject => throw null;
        public Transform transform => throw null;
        public T GetComponent<T>() => throw null;
        public T GetComponentInParent<T>() => throw null;
        public T GetComponentInChildren<T>() => throw null;
    }

    public class Behaviour : Component
    {
        public bool enabled { get => default; set { } }
    }

    public class MonoBehaviour : Behaviour { }

    public sealed class GameObject : Object
    {
        public GameObject(string name) { }
        public Transform transform => throw null;
        public SceneManagement.Scene scene => default;
        public T AddComponent<T>() where T : Component => throw null;
        public T GetComponent<T>() => throw null;
        public void SetActive(bool value) { }
        public static GameObject Find(string name) => throw null;
        public static GameObject CreatePrimitive(PrimitiveType type) => throw null;
    }

    public class Transform : Component
    {
        public Vector3 position { get => default; set { } }
        public Quaternion rotation { get => default; set { } }
        public Vector3 localPosition { get => default; set { } }
        public Vector3 localScale { get => default; set { } }
        public Vector3 forward { get => default; set { } }
        public Vector3 right { get => default; set { } }
        public Vector3 up { get => default; set { } }
        public Transform parent { get => throw null; set { } }
        public void SetParent(Transform parent, bool worldPositionStays) { }
        public Vector3 TransformPoint(Vector3 position) => default;
        public Vector3 InverseTransformPoint(Vector3 position) => default;
        public Vector3 TransformDirection(Vector3 direction) => default;
        public Vector3 InverseTransformDirection(Vector3 direction) => default;
    }

    public struct Vector2
    {
        public float x, y;
        public Vector2(float x, float y) { this.x = x; this.y = y; }
    }

    public struct Vector3
    {
        public float x, y, z;
        public Vector3(float x, float y, float z) { this.x = x; this.y = y; this.z = z; }
        public static Vector3 forward => default;
        public Vector3 normalized => default;
        public float magnitude => default;
        public float sqrMagnitude => default;
        public static Vector3 MoveTowards(Vector3 current, Vector3 target, float maxDistanceDelta) => default;
        public static Vector3 operator +(Vector3 a, Vector3 b) => default;
        public static Vector3 operator -(Vector3 a, Vector3 b) => default;
        public static Vector3 operator -(Vector3 a) => default;
        public static Vector3 operator *(Vector3 a, float d) => default;
        public static Vector3 operator *(float d, Vector3 a) => default;
        public static Vector3 operator /(Vector3 a, float d) => default;
    }

    public struct Quaternion
    {
        public float x, y, z, w;
        public Quaternion(float x, float y, float z, float w) { this.x = x; this.y = y; this.z = z; this.w = w; }
        public static Quaternion identity => default;
        public static Quaternion Euler(float x, float y, float z) => default;
        public static Quaternion Inverse(Quaternion rotation) => default;
        public static Quaternion LookRotation(Vector3 forward) => default;
        public static Quaternion Slerp(Quaternion a, Quaternion b, float t) => default;
        public void ToAngleAxis(out float angle, out Vector3 axis) { angle = default; axis = default; }
        public static Quaternion operator *(Quaternion lhs, Quaternion rhs) => default;
        public static Vector3 operator *(Quaternion rotation, Vector3 point) => default;
    }

    public struct Color
    {
        public float r, g, b, a;
        public Color(float r, float g, float b) { this.r = r; this.g = g; this.b = b; a = 1; }
        public Color(float r, float g, float b, float a) { this.r = r; this.g = g; this.b = b; this.a = a; }
        public static Color clear => default;
    }

    public struct Rect
    {
        public Rect(float x, float y, float width, float height) { }
    }

    public struct RaycastHit
    {
        public Collider collider => throw null;
    }

    public class Collider : Component { }

    public static class Mathf
    {
        public const float Deg2Rad = 0.0174532924F;
        public static float Max(float a, float b) => default;
        public static float Min(float a, float b) => default;
        public static int Min(int a, int b) => default;
        public static int CeilToInt(float f) => default;
        public static int RoundToInt(float f) => default;
        public static float Tan(float f) => default;
        public static float Atan2(float y, float x) => default;
        public static float Sqrt(float f) => default;
    }

    public class Time
    {
        public static float fixedDeltaTime { get => default; set { } }
        public static float fixedTime => default;
        public static float time => default;
        public static float unscaledTime => default;
        public static double timeAsDouble => default;
    }

    public class Physics
    {
        public static Vector3 gravity { get => default; set { } }
        public static bool Raycast(Vector3 origin, Vector3 direction, out RaycastHit hitInfo, float maxDistance) { hitInfo = default; return default; }
    }

    public static class Random
    {
        public static float value => default;
        public static float Range(float minInclusive, float maxInclusive) => default;
        public static int Range(int minInclusive, int maxExclusive) => default;
        public static void InitState(int seed) { }
    }

    public class Debug
    {
        public static void Log(object message) { }
        public static void LogError(object message) { }
    }

    public class Application
    {
        public static string unityVersion => default;
        public static string dataPath => default;
    }

    [AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
    public sealed class RequireComponent : Attribute
    {
        public RequireComponent(Type requiredComponent) { }
    }

    public sealed class Camera : Behaviour
    {
        public float fieldOfView { get => default; set { } }
        public float farClipPlane { get => default; set { } }
        public RenderTexture targetTexture { get => throw null; set { } }
        public CameraClearFlags clearFlags { get => default; set { } }
        public Color backgroundColor { get => default; set { } }
        public void Render() { }
        public void RenderWithShader(Shader shader, string replacementTag) { }
    }

    public sealed class Shader : Object
    {
        public static Shader Find(string name) => throw null;
    }

    public class Texture : Object { }

    public class RenderTexture : Texture
    {
        public RenderTexture(int width, int height, int depth, RenderTextureFormat format) { }
        public static RenderTexture active { get => throw null; set { } }
        public void Release() { }
    }

    public sealed class Texture2D : Texture
    {
        public Texture2D(int width, int height, TextureFormat textureFormat, bool mipChain) { }
        public void ReadPixels(Rect source, int destX, int destY) { }
        public byte[] GetRawTextureData() => throw null;
        public Unity.Collections.NativeArray<T> GetRawTextureData<T>() where T : struct => default;
        public void LoadRawTextureData(byte[] data) { }
        public void Apply(bool updateMipmaps) { }
    }

    public static class ImageConversion
    {
        public static byte[] EncodeToPNG(this Texture2D tex) => throw null;
        public static byte[] EncodeToJPG(this Texture2D tex, int quality) => throw null;
    }

    public sealed class AudioListener : Behaviour { }

    public sealed class AudioSettings
    {
        public static int outputSampleRate => default;
    }

    public sealed class Light : Behaviour
    {
        public LightType type { get => default; set { } }
        public float range { get => default; set { } }
        public float intensity { get => default; set { } }
        public Color color { get => default; set { } }
    }

    public sealed class TextMesh : Component
    {
        public string text { get => default; set { } }
        public float characterSize { get => default; set { } }
        public TextAnchor anchor { get => default; set { } }
        public Color color { get => default; set { } }
    }

    public class TextAsset : Object
    {
        public string text => default;
    }
}

namespace UnityEngine.XR
{
    [Flags]
    public enum InputDeviceCharacteristics : uint
    {
        None = 0, HeadMounted = 1, Camera = 2, HeldInHand = 4, HandTracking = 8, EyeTracking = 16,
        TrackedDevice = 32, Controller = 64, TrackingReference = 128, Left = 256, Right = 512, Simulated6DOF = 1024
    }

    public struct InputFeatureUsage<T>
    {
        public InputFeatureUsage(string usageName) { }
    }

    public struct Eyes
    {
        public bool TryGetFixationPoint(out Vector3 fixationPoint) { fixationPoint = default; return default; }
    }

    public static class CommonUsages
    {
        public static InputFeatureUsage<Eyes> eyesData;
    }

    public struct InputDevice
    {
        public bool TryGetFeatureValue(InputFeatureUsage<Vector3> usage, out Vector3 value) { value = default; return default; }
        public bool TryGetFeatureValue(InputFeatureUsage<Quaternion> usage, out Quaternion value) { value = default; return default; }
        public bool TryGetFeatureValue(InputFeatureUsage<Eyes> usage, out Eyes value) { value = default; return default; }
    }

    public class InputDevices
    {
        public static void GetDevicesWithCharacteristics(InputDeviceCharacteristics desiredCharacteristics, List<InputDevice> inputDevices) { }
    }
}
