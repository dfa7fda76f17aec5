using System.Linq;
using UnityEngine;
using XRFed.Codec;
using XRFed.Sensors;

namespace XRFed.Scene
{
    /// <summary>
    /// Plays an avatar's task script from the scenario: each segment walks the waypoints at the user's gait speed
    /// (activity "walking" while travelling), fixates its look_at objects in turn, performs its gestures and speaks
    /// its commands, then moves on (looping if the script says so). The current labels feed the avatar's "labels"
    /// observation. Scripted "random" segments draw from Unity's seeded Random (seeded by Python's reset).
    /// </summary>
    public class TaskScriptRunner : MonoBehaviour
    {
        /// <summary>The avatar's head (camera) transform, turned towards the look target.</summary>
        public Transform Head;

        ScenarioModel m_Scenario;
        TaskScript m_Script;
        AvatarSpec m_Avatar;
        int m_Segment = -1, m_Waypoint;
        float m_SegmentT;
        Segment m_Current;

        /// <summary>Activity label now (one of bridge.tasks.ACTIVITIES).</summary>
        public string Activity { get; private set; } = "idle";
        /// <summary>Gesture being performed now ("none" between gestures).</summary>
        public string Gesture { get; private set; } = "none";
        /// <summary>Command being spoken now ("none" otherwise).</summary>
        public string Command { get; private set; } = "none";
        /// <summary>Object the user will interact with next (intent label), or null.</summary>
        public string Interact { get { return m_Current == null ? null : m_Current.Interact; } }
        /// <summary>Active tasks of the segment (empty = all).</summary>
        public string[] Tasks { get { return m_Current == null ? new string[0] : m_Current.Tasks; } }

        /// <summary>Start <paramref name="scriptName"/> of <paramref name="scenario"/> for this avatar.</summary>
        public void Play(ScenarioModel scenario, string scriptName)
        {
            m_Scenario = scenario;
            m_Avatar = scenario.Avatars.FirstOrDefault(a => a.Name == name) ?? scenario.Avatars[0];
            scenario.TaskScripts.TryGetValue(scriptName ?? "", out m_Script);
            m_Segment = -1;
            Next();
        }

        void Next()
        {
            if (m_Script == null) { m_Current = null; return; }
            if (m_Script.Segments.Length > 0)
            {
                m_Segment++;
                if (m_Segment >= m_Script.Segments.Length)
                {
                    if (!m_Script.Loop) { m_Current = null; return; }
                    m_Segment = 0;
                }
                m_Current = m_Script.Segments[m_Segment];
            }
            else
            {
                var r = m_Script.Random;
                m_Current = new Segment
                {
                    DurationS = Random.Range((float)r.SegmentS[0], (float)r.SegmentS[1]),
                    Activity = r.Activities[Random.Range(0, r.Activities.Length)], Room = null, Waypoints = new double[0][],
                    LookAt = m_Scenario.Objects.OrderBy(_ => Random.value).Take(2).Select(o => o.Name).ToArray(),
                    Gestures = Random.value < r.GestureProb ? new[] { r.Gestures[Random.Range(0, r.Gestures.Length)] } : new string[0],
                    Commands = new string[0], Interact = null, Tasks = r.Tasks,
                };
            }
            m_SegmentT = 0;
            m_Waypoint = 0;
        }

        void FixedUpdate()
        {
            if (m_Current == null) return;
            float dt = Time.fixedDeltaTime;
            m_SegmentT += dt;
            Activity = m_Current.Activity;
            if (m_Waypoint < m_Current.Waypoints.Length)
            {
                var room = m_Scenario.RoomNamed(m_Current.Room);
                var w = m_Current.Waypoints[m_Waypoint];
                // World frame is z up in xrfed, y up in Unity: (x, y) room coordinates -> Unity (x, z).
                var goal = new Vector3((float)(room.OriginM[0] + w[0]), transform.position.y, (float)(room.OriginM[1] + w[1]));
                transform.position = Vector3.MoveTowards(transform.position, goal, (float)m_Avatar.User.GaitSpeedMps * dt);
                if ((transform.position - goal).sqrMagnitude < 1e-4f) m_Waypoint++;
                Activity = "walking";
            }
            int n = m_Current.LookAt.Length;
            if (n > 0)
            {
                var target = GameObject.Find(m_Current.LookAt[Mathf.Min(n - 1, (int)(m_SegmentT / m_Current.DurationS * n))]);
                if (target != null)
                {
                    var gaze = GetComponentInChildren<GazeProvider>();
                    if (gaze != null) gaze.LookTarget = target.transform.position;
                    if (Head != null) Head.rotation = Quaternion.Slerp(Head.rotation, Quaternion.LookRotation(target.transform.position - Head.position), 4f * dt);
                }
            }
            Gesture = Pick(m_Current.Gestures);
            Command = Pick(m_Current.Commands);
            if (m_SegmentT >= m_Current.DurationS) Next();
        }

        string Pick(string[] items)
        {
            // Items take equal slots of the segment; each is performed in the first 70% of its slot.
            if (items.Length == 0) return "none";
            float slot = (float)m_Current.DurationS / items.Length;
            int i = Mathf.Min(items.Length - 1, (int)(m_SegmentT / slot));
            return (m_SegmentT - i * slot) < 0.7f * slot ? items[i] : "none";
        }
    }
}
