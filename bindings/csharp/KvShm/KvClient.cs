using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text;

namespace KvShm
{
    /// <summary>An attachment to a kvshm store. Thread-safe; dispose to detach.
    /// Every failure throws <see cref="KvShmException"/> carrying the C ABI status; a missing
    /// key is not a failure (null / false).</summary>
    public sealed class KvClient : IDisposable
    {
        private readonly ClientHandle _h;
        [ThreadStatic] private static byte[] _buf;

        internal KvClient(ClientHandle h) { _h = h; }

        /// <summary>Attach for reading and writing to store <paramref name="name"/>
        /// (in <paramref name="dir"/>, default $KVSHM_DIR or /dev/shm).</summary>
        public static KvClient Open(string name, string dir = null)
        {
            IntPtr p;
            Native.Check(Native.kvshm_client_open(Native.CString(name), Native.CString(dir), out p));
            var h = new ClientHandle();
            h.Set(p);
            return new KvClient(h);
        }

        /// <summary>Attach read-only: never writes to the store; writes throw InvalidArgument.</summary>
        public static KvClient OpenReadOnly(string name, string dir = null)
        {
            IntPtr p;
            Native.Check(Native.kvshm_client_open_read_only(Native.CString(name), Native.CString(dir), out p));
            var h = new ClientHandle();
            h.Set(p);
            return new KvClient(h);
        }

        private KvStatus With(Func<IntPtr, KvStatus> f)
        {
            bool added = false;
            try
            {
                _h.DangerousAddRef(ref added);
                return f(_h.DangerousGetHandle());
            }
            finally
            {
                if (added) _h.DangerousRelease();
            }
        }

        private static byte[] Utf8(string s)
        {
            if (s == null) throw new ArgumentNullException(nameof(s));
            return Encoding.UTF8.GetBytes(s);
        }

        private static byte[] NotNull(byte[] b, string what)
        {
            if (b == null) throw new ArgumentNullException(what);
            return b;
        }

        /// <summary>Store <paramref name="value"/> under <paramref name="key"/>; visible to every
        /// process when this returns.</summary>
        public void Put(byte[] key, byte[] value)
        {
            NotNull(key, nameof(key));
            NotNull(value, nameof(value));
            Native.Check(With(h => Native.kvshm_put(h, key, Native.Len(key), value, Native.Len(value))));
        }

        /// <summary>UTF-8 overload of <see cref="Put(byte[], byte[])"/>.</summary>
        public void Put(string key, string value) { Put(Utf8(key), Utf8(value)); }

        /// <summary>The value of <paramref name="key"/>, or false when absent.</summary>
        public bool TryGet(byte[] key, out byte[] value)
        {
            NotNull(key, nameof(key));
            if (_buf == null) _buf = new byte[4096];
            while (true)
            {
                var buf = _buf;
                UIntPtr len = UIntPtr.Zero;
                var s = With(h => Native.kvshm_get(h, key, Native.Len(key), buf, Native.Len(buf), out len));
                if (s == KvStatus.NotFound)
                {
                    value = null;
                    return false;
                }
                var n = (int)len.ToUInt64();
                if (s == KvStatus.BufferTooSmall)
                {
                    _buf = new byte[Math.Max(n, buf.Length * 2)];
                    continue; // the value may change between the calls: ask again
                }
                Native.Check(s);
                value = new byte[n];
                Buffer.BlockCopy(buf, 0, value, 0, n);
                return true;
            }
        }

        /// <summary>The value of <paramref name="key"/>, or null when absent.</summary>
        public byte[] Get(byte[] key)
        {
            byte[] v;
            return TryGet(key, out v) ? v : null;
        }

        /// <summary>UTF-8 overload: the value decoded as UTF-8, or null when absent.</summary>
        public string Get(string key)
        {
            var v = Get(Utf8(key));
            return v == null ? null : Encoding.UTF8.GetString(v);
        }

        /// <summary>The value of <paramref name="key"/> and its version, or false when absent.
        /// Versions are never 0.</summary>
        public bool TryGetVersioned(byte[] key, out byte[] value, out ulong version)
        {
            NotNull(key, nameof(key));
            var buf = _buf ?? (_buf = new byte[4096]);
            while (true)
            {
                UIntPtr len = UIntPtr.Zero;
                ulong ver = 0;
                var b = buf;
                var s = With(h => Native.kvshm_get_versioned(h, key, Native.Len(key), b, Native.Len(b), out len, out ver));
                if (s == KvStatus.NotFound)
                {
                    value = null;
                    version = 0;
                    return false;
                }
                var n = (int)len.ToUInt64();
                if (s == KvStatus.BufferTooSmall)
                {
                    buf = _buf = new byte[Math.Max(n, buf.Length * 2)];
                    continue;
                }
                Native.Check(s);
                value = new byte[n];
                Buffer.BlockCopy(buf, 0, value, 0, n);
                version = ver;
                return true;
            }
        }

        /// <summary>Store <paramref name="value"/> only if the key's version is
        /// <paramref name="expected"/> (0: only if absent). True with the new version, or false
        /// with the version found in <paramref name="version"/> (0: absent); nothing changed then.
        /// </summary>
        public bool TryPutIfVersion(byte[] key, byte[] value, ulong expected, out ulong version)
        {
            NotNull(key, nameof(key));
            NotNull(value, nameof(value));
            ulong nv = 0, cur = 0;
            var s = With(h => Native.kvshm_put_if_version(h, key, Native.Len(key), value, Native.Len(value), expected, out nv, out cur));
            if (s == KvStatus.Conflict)
            {
                version = cur;
                return false;
            }
            Native.Check(s);
            version = nv;
            return true;
        }

        /// <summary>Remove the key only if its version is <paramref name="expected"/>; false
        /// (nothing changed) otherwise.</summary>
        public bool TryRemoveIfVersion(byte[] key, ulong expected)
        {
            NotNull(key, nameof(key));
            ulong cur = 0;
            var s = With(h => Native.kvshm_remove_if_version(h, key, Native.Len(key), expected, out cur));
            if (s == KvStatus.Conflict) return false;
            Native.Check(s);
            return true;
        }

        /// <summary>Store only if absent; true if stored.</summary>
        public bool PutIfAbsent(byte[] key, byte[] value)
        {
            NotNull(key, nameof(key));
            NotNull(value, nameof(value));
            bool stored = false;
            Native.Check(With(h => Native.kvshm_put_if_absent(h, key, Native.Len(key), value, Native.Len(value), out stored)));
            return stored;
        }

        /// <summary>Add <paramref name="delta"/> to the decimal integer under the key (absent =
        /// 0) and return the result. Throws with NotAnInteger or Overflow (nothing changed).
        /// </summary>
        public long Incr(byte[] key, long delta = 1)
        {
            NotNull(key, nameof(key));
            long r = 0;
            Native.Check(With(h => Native.kvshm_incr(h, key, Native.Len(key), delta, out r)));
            return r;
        }

        /// <summary>UTF-8 overload of <see cref="Incr(byte[], long)"/>.</summary>
        public long Incr(string key, long delta = 1) { return Incr(Utf8(key), delta); }

        /// <summary>Append to the key's value (absent = empty); returns the new length.</summary>
        public long Append(byte[] key, byte[] data)
        {
            NotNull(key, nameof(key));
            NotNull(data, nameof(data));
            UIntPtr n = UIntPtr.Zero;
            Native.Check(With(h => Native.kvshm_append(h, key, Native.Len(key), data, Native.Len(data), out n)));
            return (long)n.ToUInt64();
        }

        /// <summary>Wait until the key's version is no longer <paramref name="since"/> (0: until
        /// it exists), at most <paramref name="timeout"/>, sleeping. True with the new version
        /// (0: absent), false on timeout.</summary>
        public bool WaitChanged(byte[] key, ulong since, TimeSpan timeout, out ulong version)
        {
            NotNull(key, nameof(key));
            bool changed = false;
            ulong v = 0;
            var ms = (ulong)Math.Max(0, timeout.TotalMilliseconds);
            Native.Check(With(h => Native.kvshm_wait_changed(h, key, Native.Len(key), since, ms, out changed, out v)));
            version = v;
            return changed;
        }

        /// <summary>Remove <paramref name="key"/>; true if it was present.</summary>
        public bool Remove(byte[] key)
        {
            NotNull(key, nameof(key));
            bool existed = false;
            Native.Check(With(h => Native.kvshm_remove(h, key, Native.Len(key), out existed)));
            return existed;
        }

        /// <summary>UTF-8 overload of <see cref="Remove(byte[])"/>.</summary>
        public bool Remove(string key) { return Remove(Utf8(key)); }

        /// <summary>Whether <paramref name="key"/> is present.</summary>
        public bool Contains(byte[] key)
        {
            NotNull(key, nameof(key));
            bool found = false;
            Native.Check(With(h => Native.kvshm_contains(h, key, Native.Len(key), out found)));
            return found;
        }

        /// <summary>UTF-8 overload of <see cref="Contains(byte[])"/>.</summary>
        public bool Contains(string key) { return Contains(Utf8(key)); }

        /// <summary>Number of keys.</summary>
        public long Count
        {
            get
            {
                ulong n = 0;
                Native.Check(With(h => Native.kvshm_len(h, out n)));
                return (long)n;
            }
        }

        /// <summary>Pins byte arrays for the duration of a batch call.</summary>
        private sealed class Pinned : IDisposable
        {
            private readonly List<GCHandle> _handles = new List<GCHandle>();
            public NativeBytes[] Add(IList<byte[]> items)
            {
                var arr = new NativeBytes[items.Count];
                for (int i = 0; i < items.Count; i++)
                {
                    var b = NotNull(items[i], "batch item");
                    var g = GCHandle.Alloc(b, GCHandleType.Pinned);
                    _handles.Add(g);
                    arr[i] = new NativeBytes { Ptr = b.Length == 0 ? IntPtr.Zero : g.AddrOfPinnedObject(), Len = Native.Len(b) };
                }
                return arr;
            }
            public void Dispose() { foreach (var g in _handles) g.Free(); }
        }

        /// <summary>Store <paramref name="value"/>, expiring after <paramref name="ttl"/> (at least
        /// 1 ms): then the key is absent for every process.</summary>
        public void PutWithTtl(byte[] key, byte[] value, TimeSpan ttl)
        {
            NotNull(key, nameof(key));
            NotNull(value, nameof(value));
            var ms = (ulong)Math.Max(0, Math.Ceiling(ttl.TotalMilliseconds));
            Native.Check(With(h => Native.kvshm_put_ttl(h, key, Native.Len(key), value, Native.Len(value), ms)));
        }

        /// <summary>Make the key expire after <paramref name="ttl"/>; false if it is missing.</summary>
        public bool Expire(byte[] key, TimeSpan ttl)
        {
            NotNull(key, nameof(key));
            bool found = false;
            var ms = (ulong)Math.Max(0, Math.Ceiling(ttl.TotalMilliseconds));
            Native.Check(With(h => Native.kvshm_expire(h, key, Native.Len(key), ms, out found)));
            return found;
        }

        /// <summary>Remove the key's expiry; true if it had one.</summary>
        public bool Persist(byte[] key)
        {
            NotNull(key, nameof(key));
            bool had = false;
            Native.Check(With(h => Native.kvshm_persist(h, key, Native.Len(key), out had)));
            return had;
        }

        /// <summary>Time the key has to live: null when missing or expired,
        /// <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> when it does not expire.</summary>
        public TimeSpan? Ttl(byte[] key)
        {
            NotNull(key, nameof(key));
            long ms = 0;
            var s = With(h => Native.kvshm_ttl(h, key, Native.Len(key), out ms));
            if (s == KvStatus.NotFound) return null;
            Native.Check(s);
            return ms < 0 ? System.Threading.Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(ms);
        }

        /// <summary>The store's eviction policy, for every process using it: set it to evict
        /// instead of failing when the store is full.</summary>
        public EvictionPolicy Eviction
        {
            get
            {
                uint p = 0;
                ulong n = 0;
                Native.Check(With(h => Native.kvshm_get_eviction(h, out p, out n)));
                return (EvictionPolicy)p;
            }
            set { Native.Check(With(h => Native.kvshm_set_eviction(h, (uint)value))); }
        }

        /// <summary>Keys evicted since the store was created.</summary>
        public ulong Evicted
        {
            get
            {
                uint p = 0;
                ulong n = 0;
                Native.Check(With(h => Native.kvshm_get_eviction(h, out p, out n)));
                return n;
            }
        }

        /// <summary>Store only if present; true if stored.</summary>
        public bool Replace(byte[] key, byte[] value)
        {
            NotNull(key, nameof(key));
            NotNull(value, nameof(value));
            bool stored = false;
            Native.Check(With(h => Native.kvshm_replace(h, key, Native.Len(key), value, Native.Len(value), out stored)));
            return stored;
        }

        /// <summary>All or nothing, atomically: if every check key is at its version (0: must be
        /// absent), store <paramref name="puts"/> and remove <paramref name="removes"/>. Returns
        /// true, or false (nothing changed) with the index of the first failed check in
        /// <paramref name="failedCheck"/>.</summary>
        public bool CommitIf(IList<KeyValuePair<byte[], ulong>> checks, IList<KeyValuePair<byte[], byte[]>> puts,
                             IList<byte[]> removes, out int failedCheck)
        {
            if (checks == null) throw new ArgumentNullException(nameof(checks));
            if (puts == null) throw new ArgumentNullException(nameof(puts));
            if (removes == null) throw new ArgumentNullException(nameof(removes));
            var ck = checks.Select(c => c.Key).ToList();
            var cv = checks.Select(c => c.Value).ToArray();
            var pk = puts.Select(p => p.Key).ToList();
            var pv = puts.Select(p => p.Value).ToList();
            using (var pin = new Pinned())
            {
                var a = pin.Add(ck);
                var b = pin.Add(pk);
                var c = pin.Add(pv);
                var d = pin.Add(removes);
                UIntPtr failed = UIntPtr.Zero;
                ulong cur = 0;
                var s = With(h => Native.kvshm_commit_if(h, a, cv, new UIntPtr((ulong)a.Length), b, c,
                    new UIntPtr((ulong)b.Length), d, new UIntPtr((ulong)d.Length), out failed, out cur));
                if (s == KvStatus.Conflict)
                {
                    failedCheck = (int)failed.ToUInt64();
                    return false;
                }
                Native.Check(s);
                failedCheck = -1;
                return true;
            }
        }

        /// <summary>Store every pair, all or nothing.</summary>
        public void PutMany(IList<KeyValuePair<byte[], byte[]>> items)
        {
            if (items == null) throw new ArgumentNullException(nameof(items));
            var keys = new List<byte[]>(items.Count);
            var values = new List<byte[]>(items.Count);
            foreach (var kv in items)
            {
                keys.Add(kv.Key);
                values.Add(kv.Value);
            }
            using (var pin = new Pinned())
            {
                var k = pin.Add(keys);
                var v = pin.Add(values);
                Native.Check(With(h => Native.kvshm_put_many(h, k, v, new UIntPtr((ulong)k.Length))));
            }
        }

        /// <summary>UTF-8 overload of <see cref="PutMany(IList{KeyValuePair{byte[], byte[]}})"/>.</summary>
        public void PutMany(IDictionary<string, string> items)
        {
            var list = new List<KeyValuePair<byte[], byte[]>>();
            foreach (var kv in items) list.Add(new KeyValuePair<byte[], byte[]>(Utf8(kv.Key), Utf8(kv.Value)));
            PutMany(list);
        }

        /// <summary>Values of all keys as one consistent snapshot (null for absent keys).</summary>
        public byte[][] GetMany(IList<byte[]> keys)
        {
            if (keys == null) throw new ArgumentNullException(nameof(keys));
            var lens = new UIntPtr[keys.Count];
            var buf = new byte[4096];
            using (var pin = new Pinned())
            {
                var k = pin.Add(keys);
                while (true)
                {
                    UIntPtr needed = UIntPtr.Zero;
                    var b = buf;
                    var s = With(h => Native.kvshm_get_many(h, k, new UIntPtr((ulong)k.Length), b, Native.Len(b), lens, out needed));
                    if (s == KvStatus.BufferTooSmall)
                    {
                        buf = new byte[(int)needed.ToUInt64()];
                        continue;
                    }
                    Native.Check(s);
                    var result = new byte[keys.Count][];
                    int at = 0;
                    for (int i = 0; i < keys.Count; i++)
                    {
                        if (lens[i] == UIntPtr.Subtract(UIntPtr.Zero, 1)) continue; // KVSHM_MISSING
                        int n = (int)lens[i].ToUInt64();
                        result[i] = new byte[n];
                        Buffer.BlockCopy(b, at, result[i], 0, n);
                        at += n;
                    }
                    return result;
                }
            }
        }

        /// <summary>Remove all keys atomically; returns how many existed.</summary>
        public int RemoveMany(IList<byte[]> keys)
        {
            if (keys == null) throw new ArgumentNullException(nameof(keys));
            using (var pin = new Pinned())
            {
                var k = pin.Add(keys);
                UIntPtr removed = UIntPtr.Zero;
                Native.Check(With(h => Native.kvshm_remove_many(h, k, new UIntPtr((ulong)k.Length), out removed)));
                return (int)removed.ToUInt64();
            }
        }

        /// <summary>Store metrics.</summary>
        public KvStats Stats()
        {
            var s = default(KvStats);
            Native.Check(With(h => Native.kvshm_get_stats(h, out s)));
            return s;
        }

        /// <summary>Full integrity check: the list of problems (empty when healthy).</summary>
        public string[] Verify()
        {
            ulong problems = 0;
            var report = new byte[16384];
            Native.Check(With(h => Native.kvshm_verify(h, out problems, report, Native.Len(report))));
            if (problems == 0) return new string[0];
            int end = Array.IndexOf(report, (byte)0);
            return Encoding.UTF8.GetString(report, 0, end < 0 ? report.Length : end).Split('\n');
        }

        /// <summary>Detach from the store.</summary>
        public void Dispose() { _h.Dispose(); }
    }
}
