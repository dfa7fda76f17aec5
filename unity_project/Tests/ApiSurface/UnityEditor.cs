// Reference surface of UnityEditor (Unity 6000.0) -- DECLARATIONS ONLY (see UnityEngine.cs); Editor scripts only.
// Checked against the Unity 6 Scripting Reference: MenuItem(string itemName), EditorUtility.OpenFilePanel(string
// title, string directory, string extension), AssetDatabase.ImportAsset(string path), AssetDatabase.LoadAssetAtPath<T>(
// string assetPath), SceneManagement.EditorSceneManager.NewScene(NewSceneSetup, NewSceneMode) / SaveScene(Scene,
// string dstScenePath), NewSceneSetup (EmptyScene, DefaultGameObjects), NewSceneMode (Single, Additive).
using System;
using UnityEngine.SceneManagement;

namespace UnityEditor
{
    [AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
    public sealed class MenuItem : Attribute
    {
        public MenuItem(string itemName) { }
    }

    public class EditorUtility
    {
        public static string OpenFilePanel(string title, string directory, string extension) => default;
    }

    public sealed class AssetDatabase
    {
        public static void ImportAsset(string path) { }
        public static T LoadAssetAtPath<T>(string assetPath) where T : UnityEngine.Object => throw null;
    }
}

namespace UnityEditor.SceneManagement
{
    public enum NewSceneSetup { EmptyScene = 0, DefaultGameObjects = 1 }
    public enum NewSceneMode { Single = 0, Additive = 1 }

    public sealed class EditorSceneManager
    {
        public static Scene NewScene(NewSceneSetup setup, NewSceneMode mode) => default;
        public static bool SaveScene(Scene scene, string dstScenePath) => default;
    }
}
