using UnityEngine;

namespace XRFed.Scene
{
    /// <summary>Marks a Unity Light as a scenario light of a room (relative intensity from the scenario).</summary>
    [RequireComponent(typeof(Light))]
    public class XRFedLight : MonoBehaviour
    {
        /// <summary>Room name in the scenario.</summary>
        public string Room;
        /// <summary>The scenario light's relative intensity.</summary>
        public double Intensity = 1.0;
    }
}
