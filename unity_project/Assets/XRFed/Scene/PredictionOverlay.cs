using UnityEngine;

namespace XRFed.Scene
{
    /// <summary>
    /// Shows the latest prediction of a device's agent in front of its camera ("task: label (confidence)"), so a
    /// tester in the Editor sees the model's output live. Place it as a child of the avatar's camera.
    /// </summary>
    public class PredictionOverlay : MonoBehaviour
    {
        /// <summary>Seconds a prediction stays visible.</summary>
        public float HoldS = 2.0f;

        TextMesh m_Text;
        float m_ShownAt = -1e9f;

        void Awake()
        {
            // Not `??`: a missing component is Unity's "fake null", which only == null detects.
            m_Text = GetComponent<TextMesh>();
            if (m_Text == null) m_Text = gameObject.AddComponent<TextMesh>();
            m_Text.characterSize = 0.02f;
            m_Text.anchor = TextAnchor.LowerCenter;
            transform.localPosition = new Vector3(0, -0.15f, 0.6f);
        }

        /// <summary>Display a prediction (called by XRFedScene on show_prediction).</summary>
        public void Show(string task, string label, double confidence)
        {
            m_Text.text = task + ": " + label + " (" + confidence.ToString("0.00") + ")";
            m_ShownAt = Time.time;
        }

        void Update()
        {
            m_Text.color = new Color(1, 1, 1, Time.time - m_ShownAt < HoldS ? 1 : 0);
        }
    }
}
