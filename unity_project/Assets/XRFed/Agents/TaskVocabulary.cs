using System;

namespace XRFed.Agents
{
    /// <summary>Class lists per task (bridge.tasks.TASKS order), so labels become the same indices as in Python.</summary>
    [Serializable]
    public class TaskVocabulary
    {
        /// <summary>Comma-separated classes per task.</summary>
        public string[] Classes = new string[6];

        /// <summary>Index of <paramref name="label"/> in task <paramref name="task"/>, -1 when unknown.</summary>
        public int Index(int task, string label) { return Array.IndexOf(Classes[task].Split(','), label); }
    }
}
