using UnityEngine;

namespace XRFed.Agents
{
    /// <summary>Marks a scene object with its scenario category (object_recognition ground truth).</summary>
    public class XRFedObject : MonoBehaviour
    {
        /// <summary>One of bridge.tasks.OBJECT_CATEGORIES.</summary>
        public string Category;
    }
}
