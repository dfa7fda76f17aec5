// Canonical JSON shared with Python (bridge/unity/codec.py): no UnityEngine here, so the same file compiles with
// Debian's Mono compiler and is tested against golden messages written by the Python side.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace XRFed.Codec
{
    /// <summary>
    /// Parses JSON into plain values (Dictionary&lt;string, object&gt;, List&lt;object&gt;, string, long, double,
    /// bool, null) and writes them back in xrfed's canonical form: keys sorted by code point, no whitespace,
    /// non-ASCII escaped as \uXXXX, doubles as Python's shortest round-trip repr, integers without a fraction.
    /// </summary>
    public static class CanonicalJson
    {
        /// <summary>Parse one JSON document; throws <see cref="FormatException"/> naming the offset on errors.</summary>
        public static object Parse(string text)
        {
            int i = 0;
            object v = ParseValue(text, ref i);
            SkipWs(text, ref i);
            if (i != text.Length) throw new FormatException("trailing characters at offset " + i);
            return v;
        }

        /// <summary>Write a value in canonical form; with <paramref name="sortKeys"/> false, object keys keep their
        /// insertion order (the stream protocol's headers, which Python writes with <c>json.dumps</c> that way).</summary>
        public static string Write(object value, bool sortKeys = true)
        {
            var sb = new StringBuilder();
            WriteValue(sb, value, sortKeys);
            return sb.ToString();
        }

        /// <summary>Python's repr() of a finite double: the shortest digit string that parses back to the same
        /// double (the one nearest the exact value when several are as short), in exponent form outside
        /// [1e-4, 1e16). Exact BigInteger arithmetic, because runtime formatters and parsers are not all correctly
        /// rounded (Mono's double.Parse misrounds about 3% of Python's reprs and throws just above double.MaxValue).</summary>
        public static string FormatDouble(double d)
        {
            if (double.IsNaN(d) || double.IsInfinity(d)) throw new ArgumentException("NaN/inf cannot be sent");
            if (d == 0) return (1 / d < 0) ? "-0.0" : "0.0";
            bool neg = d < 0;
            string exact; int point; // |d| = 0.exact * 10^point
            ExactDecimal(Math.Abs(d), out exact, out point);
            long m; int e; bool narrowBelow; // |d| = m * 2^e
            Binary(Math.Abs(d), out m, out e, out narrowBelow);
            string digits = null; int exp = 0;
            for (int p = 1; p <= 17 && digits == null; p++)
            {
                BigInteger n = BigInteger.Parse(exact.Length > p ? exact.Substring(0, p) : exact.PadRight(p, '0'));
                if (exact.Length > p)
                {
                    int cmp = string.CompareOrdinal(exact.Substring(p), "5".PadRight(exact.Length - p, '0'));
                    if (cmp > 0 || (cmp == 0 && !n.IsEven)) n += 1; // round half to even
                }
                foreach (var cand in new[] { n, n - 1, n + 1 })
                {
                    string c = cand.ToString(CultureInfo.InvariantCulture);
                    int pt = point + (c.Length - p); // a carry (999 -> 1000) moves the point
                    if (cand > 0 && RoundsTo(cand, pt - c.Length, m, e, narrowBelow))
                    {
                        digits = c.TrimEnd('0');
                        exp = pt - 1;
                        break;
                    }
                }
            }
            if (digits.Length == 0) digits = "0";
            var sb = new StringBuilder();
            if (neg) sb.Append('-');
            if (exp >= -4 && exp < 16)
            {
                if (exp >= 0)
                {
                    if (digits.Length <= exp + 1) sb.Append(digits).Append('0', exp + 1 - digits.Length).Append(".0");
                    else sb.Append(digits, 0, exp + 1).Append('.').Append(digits, exp + 1, digits.Length - exp - 1);
                }
                else
                {
                    sb.Append("0.").Append('0', -exp - 1).Append(digits);
                }
            }
            else
            {
                sb.Append(digits[0]);
                if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
                sb.Append('e').Append(exp < 0 ? '-' : '+');
                int a = Math.Abs(exp);
                sb.Append(a < 10 ? "0" + a : a.ToString(CultureInfo.InvariantCulture));
            }
            return sb.ToString();
        }

        /// <summary>A positive finite double as m * 2^e (m below 2^53); <paramref name="narrowBelow"/> when the
        /// next double down is only half as far away as the next one up (m = 2^52 above the smallest binade).</summary>
        static void Binary(double v, out long m, out int e, out bool narrowBelow)
        {
            long bits = BitConverter.DoubleToInt64Bits(v);
            e = (int)((bits >> 52) & 0x7FF);
            m = bits & 0xFFFFFFFFFFFFFL;
            narrowBelow = m == 0 && e > 1;
            if (e == 0) e = 1; else m |= 1L << 52;
            e -= 1075;
        }

        /// <summary>Whether cand * 10^k parses to m * 2^e under round-half-to-even, decided exactly: the value must
        /// lie between the midpoints to the neighbouring doubles (on a midpoint only when m is even).</summary>
        static bool RoundsTo(BigInteger cand, int k, long m, int e, bool narrowBelow)
        {
            // compare 4 * cand * 10^k with (4m - 2) * 2^e and (4m + 2) * 2^e (4m - 1 when the gap below is halved),
            // both sides multiplied up to integers
            BigInteger x = 4 * cand, lo = 4 * (BigInteger)m - (narrowBelow ? 1 : 2), hi = 4 * (BigInteger)m + 2;
            if (k >= 0) x *= BigInteger.Pow(10, k);
            else { lo *= BigInteger.Pow(10, -k); hi *= BigInteger.Pow(10, -k); }
            if (e >= 0) { lo <<= e; hi <<= e; }
            else x <<= -e;
            bool even = (m & 1) == 0;
            return (x > lo || (even && x == lo)) && (x < hi || (even && x == hi));
        }

        /// <summary>The double nearest a JSON number (round half to even), computed exactly with BigInteger: runtime
        /// parsers are not all correctly rounded (Mono's misses the nearest double for about 3% of Python's reprs),
        /// and a value that does not come back as the same double would be re-encoded differently.</summary>
        static double ParseDouble(string num, int offset)
        {
            int i = 0, fracDigits = 0, exp10 = 0;
            bool neg = num[0] == '-', seenDigit = false, seenPoint = false;
            if (num[0] == '-' || num[0] == '+') i++;
            var digits = new StringBuilder();
            for (; i < num.Length && num[i] != 'e' && num[i] != 'E'; i++)
            {
                char c = num[i];
                if (c == '.' && !seenPoint) { seenPoint = true; continue; }
                if (c < '0' || c > '9') throw new FormatException("malformed number '" + num + "' at offset " + offset);
                seenDigit = true;
                digits.Append(c);
                if (seenPoint) fracDigits++;
            }
            if (!seenDigit) throw new FormatException("malformed number '" + num + "' at offset " + offset);
            if (i < num.Length && !int.TryParse(num.Substring(i + 1), NumberStyles.AllowLeadingSign,
                                                CultureInfo.InvariantCulture, out exp10))
                throw new FormatException("malformed exponent in '" + num + "' at offset " + offset);
            BigInteger n = BigInteger.Parse(digits.ToString(), CultureInfo.InvariantCulture);
            int k = exp10 - fracDigits; // value = n * 10^k
            double zero = neg ? BitConverter.Int64BitsToDouble(long.MinValue) : 0.0;
            if (n.IsZero || digits.Length + k < -330) return zero; // below half the smallest subnormal
            if (digits.Length + k > 310) throw new FormatException("number '" + num + "' at offset " + offset + " is outside the double range");
            BigInteger num2 = k >= 0 ? n * BigInteger.Pow(10, k) : n, den = k >= 0 ? BigInteger.One : BigInteger.Pow(10, -k);
            // value = q * 2^e2 with q of 53 bits (fewer below the normal range), then round on the remainder
            int e2 = Math.Max(BitLength(num2) - BitLength(den) - 53, -1074);
            BigInteger q, r, div = e2 >= 0 ? den << e2 : den;
            q = BigInteger.DivRem(e2 >= 0 ? num2 : num2 << -e2, div, out r);
            if (q >> 53 != 0) // the bit-length estimate was one short: one bit more to the exponent
            {
                e2++;
                div = e2 >= 0 ? den << e2 : den;
                q = BigInteger.DivRem(e2 >= 0 ? num2 : num2 << -e2, div, out r);
            }
            int half = (2 * r).CompareTo(div);
            if (half > 0 || (half == 0 && !q.IsEven)) q += 1;
            if (q >> 53 != 0) { q >>= 1; e2++; } // rounding carried into a 54th bit (q was 2^53 - 1)
            if (e2 > 971) throw new FormatException("number '" + num + "' at offset " + offset + " is outside the double range");
            long m = (long)q, bits = m >> 52 == 0 ? m : ((long)(e2 + 1075) << 52) | (m & 0xFFFFFFFFFFFFFL);
            return BitConverter.Int64BitsToDouble(neg ? bits | long.MinValue : bits);
        }

        static int BitLength(BigInteger v)
        {
            byte[] b = v.ToByteArray(); // little-endian two's complement, v > 0
            int top = b.Length - 1;
            while (top > 0 && b[top] == 0) top--;
            int bits = 8 * top, t = b[top];
            while (t != 0) { bits++; t >>= 1; }
            return bits;
        }

        /// <summary>All significant digits of a positive double: value = 0.digits * 10^point, exactly.</summary>
        static void ExactDecimal(double v, out string digits, out int point)
        {
            long m; int e; bool narrowBelow;
            Binary(v, out m, out e, out narrowBelow); // v = m * 2^e
            string s;
            int frac; // number of decimal digits after the point in s
            if (e >= 0) { s = (new BigInteger(m) << e).ToString(CultureInfo.InvariantCulture); frac = 0; }
            else { s = (new BigInteger(m) * BigInteger.Pow(5, -e)).ToString(CultureInfo.InvariantCulture); frac = -e; }
            point = s.Length - frac;
            digits = s.TrimEnd('0');
        }

        static void WriteValue(StringBuilder sb, object v, bool sortKeys)
        {
            if (v == null) { sb.Append("null"); return; }
            if (v is bool) { sb.Append((bool)v ? "true" : "false"); return; }
            if (v is string) { WriteString(sb, (string)v); return; }
            if (v is long || v is int) { sb.Append(Convert.ToInt64(v).ToString(CultureInfo.InvariantCulture)); return; }
            if (v is double || v is float) { sb.Append(FormatDouble(Convert.ToDouble(v))); return; }
            var dict = v as IDictionary<string, object>;
            if (dict != null)
            {
                var keys = new List<string>(dict.Keys);
                if (sortKeys) keys.Sort(string.CompareOrdinal);
                sb.Append('{');
                for (int k = 0; k < keys.Count; k++)
                {
                    if (k > 0) sb.Append(',');
                    WriteString(sb, keys[k]);
                    sb.Append(':');
                    WriteValue(sb, dict[keys[k]], sortKeys);
                }
                sb.Append('}');
                return;
            }
            var list = v as System.Collections.IEnumerable;
            if (list != null)
            {
                sb.Append('[');
                bool first = true;
                foreach (var x in list)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteValue(sb, x, sortKeys);
                }
                sb.Append(']');
                return;
            }
            throw new ArgumentException("cannot write " + v.GetType().Name + " as JSON");
        }

        static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        if (c < 0x20 || c > 0x7e) sb.Append("\\u").Append(((int)c).ToString("x4"));
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }

        static void SkipWs(string s, ref int i)
        {
            while (i < s.Length && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
        }

        static object ParseValue(string s, ref int i)
        {
            SkipWs(s, ref i);
            if (i >= s.Length) throw new FormatException("unexpected end of JSON");
            char c = s[i];
            if (c == '{')
            {
                var d = new Dictionary<string, object>();
                i++;
                SkipWs(s, ref i);
                if (s[i] == '}') { i++; return d; }
                while (true)
                {
                    SkipWs(s, ref i);
                    string key = ParseString(s, ref i);
                    SkipWs(s, ref i);
                    Expect(s, ref i, ':');
                    d[key] = ParseValue(s, ref i);
                    SkipWs(s, ref i);
                    if (s[i] == ',') { i++; continue; }
                    Expect(s, ref i, '}');
                    return d;
                }
            }
            if (c == '[')
            {
                var l = new List<object>();
                i++;
                SkipWs(s, ref i);
                if (s[i] == ']') { i++; return l; }
                while (true)
                {
                    l.Add(ParseValue(s, ref i));
                    SkipWs(s, ref i);
                    if (s[i] == ',') { i++; continue; }
                    Expect(s, ref i, ']');
                    return l;
                }
            }
            if (c == '"') return ParseString(s, ref i);
            if (s.Substring(i).StartsWith("true")) { i += 4; return true; }
            if (s.Substring(i).StartsWith("false")) { i += 5; return false; }
            if (s.Substring(i).StartsWith("null")) { i += 4; return null; }
            int start = i;
            bool isFloat = false;
            while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0)
            {
                if (".eE".IndexOf(s[i]) >= 0) isFloat = true;
                i++;
            }
            if (start == i) throw new FormatException("unexpected character '" + c + "' at offset " + i);
            string num = s.Substring(start, i - start);
            if (isFloat) return ParseDouble(num, start);
            return long.Parse(num, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        }

        static void Expect(string s, ref int i, char c)
        {
            if (i >= s.Length || s[i] != c) throw new FormatException("expected '" + c + "' at offset " + i);
            i++;
        }

        static string ParseString(string s, ref int i)
        {
            Expect(s, ref i, '"');
            var sb = new StringBuilder();
            while (true)
            {
                if (i >= s.Length) throw new FormatException("unterminated string");
                char c = s[i++];
                if (c == '"') return sb.ToString();
                if (c != '\\') { sb.Append(c); continue; }
                char e = s[i++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 'r': sb.Append('\r'); break;
                    case 't': sb.Append('\t'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case '"': sb.Append('"'); break;
                    case '\\': sb.Append('\\'); break;
                    case '/': sb.Append('/'); break;
                    case 'u':
                        sb.Append((char)Convert.ToInt32(s.Substring(i, 4), 16));
                        i += 4;
                        break;
                    default: throw new FormatException("bad escape '\\" + e + "' at offset " + (i - 1));
                }
            }
        }
    }
}
