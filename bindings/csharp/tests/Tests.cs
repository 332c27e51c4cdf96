// C# tests of the KvShm wrapper, compiled with mcs and run with mono against libkvshm.so.
// Usage: mono Tests.exe <path of kvshm-child>. Prints "N passed, M failed".
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Linq;
using System.Text;
using KvShm;

static class Tests
{
    static int passed, failed;

    static void Check(bool cond, string what)
    {
        if (cond) passed++;
        else { failed++; Console.WriteLine("FAILED: " + what); }
    }

    static void Throws(KvStatus want, Action a, string what)
    {
        try { a(); failed++; Console.WriteLine("FAILED (no exception): " + what); }
        catch (KvShmException e)
        {
            if (e.Status == want) passed++;
            else { failed++; Console.WriteLine("FAILED: " + what + ": got " + e.Status + " (" + e.Message + ")"); }
        }
    }

    static int Main(string[] args)
    {
        string child = args.Length > 0 ? args[0] : null;
        string name = "t-csharp-" + Process.GetCurrentProcess().Id;
        string dir = Environment.GetEnvironmentVariable("KVSHM_DIR") ?? "/dev/shm";
        try
        {
            Run(name, dir, child);
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("FAILED with exception: " + e);
        }
        finally
        {
            foreach (var suffix in new[] { "", "-2" })
                try { System.IO.File.Delete(dir + "/kvshm." + name + suffix); } catch { }
        }
        Console.WriteLine(passed + " passed, " + failed + " failed");
        return failed == 0 ? 0 : 1;
    }

    static void Run(string name, string dir, string child)
    {
        foreach (KvStatus s in Enum.GetValues(typeof(KvStatus)))
            Check(!string.IsNullOrEmpty(KvShmException.StatusText(s)), "strerror " + s);

        using (var host = KvHost.Create(name, new KvConfig { MaxKeyLen = 32, MaxValueLen = 1000 }))
        {
            Throws(KvStatus.Exists, () => KvHost.Create(name).Dispose(), "second create");
            Throws(KvStatus.HostRunning, () => KvHost.OpenExisting(name).Dispose(), "second host");
            var h = host.Client;
            h.Put("greeting", "hello from C#");
            using (var c = KvClient.Open(name))
            {
                Check(c.Get("greeting") == "hello from C#", "string round trip");
                var bin = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
                c.Put(new byte[] { 0, 255, 0 }, bin);
                byte[] got;
                Check(c.TryGet(new byte[] { 0, 255, 0 }, out got) && got.SequenceEqual(bin), "binary round trip");
                Check(c.Get("missing") == null, "missing is null");
                Check(!c.TryGet(Encoding.UTF8.GetBytes("missing"), out got) && got == null, "TryGet missing");
                var big = new byte[900];
                new Random(1).NextBytes(big);
                c.Put(Encoding.UTF8.GetBytes("big"), big);
                Check(c.Get(Encoding.UTF8.GetBytes("big")).SequenceEqual(big), "value larger than the first buffer");
                c.Put("empty", "");
                Check(c.Get("empty") == "", "empty value");
                Check(c.Contains("greeting") && !c.Contains("nope"), "contains");
                Check(c.Remove("empty") && !c.Remove("empty"), "remove");
                Throws(KvStatus.KeyTooLong, () => c.Put(new string('k', 33), "v"), "key too long");
                Throws(KvStatus.ValueTooLong, () => c.Put("k", new string('v', 1001)), "value too long");

                c.PutMany(new Dictionary<string, string> { { "m1", "one" }, { "m2", "two" } });
                Throws(KvStatus.ValueTooLong, () => c.PutMany(new Dictionary<string, string> { { "m3", "x" }, { "m4", new string('v', 1001) } }), "batch all or nothing");
                Check(!c.Contains("m3"), "failed batch wrote nothing");
                var many = c.GetMany(new[] { "m1", "zz", "m2" }.Select(Encoding.UTF8.GetBytes).ToList());
                Check(Encoding.UTF8.GetString(many[0]) == "one" && many[1] == null && Encoding.UTF8.GetString(many[2]) == "two", "get many");
                Check(c.RemoveMany(new[] { "m1", "m2", "zz" }.Select(Encoding.UTF8.GetBytes).ToList()) == 2, "remove many");
                Check(c.Count == 3, "count " + c.Count);
                var st = c.Stats();
                Check(st.Keys == 3 && st.Clients == 2 && st.HostPid == (ulong)Process.GetCurrentProcess().Id && st.MaxKeyLen == 32, "stats");
                Check(c.Verify().Length == 0, "verify");

                // Another language writes, C# reads: a Rust process puts keys into this store.
                if (child != null)
                {
                    for (int i = 0; i < 3; i++)
                    {
                        var p = Process.Start(new ProcessStartInfo(child, "put " + dir + " " + name + " from-rust-" + i + " rust-value-" + i) { UseShellExecute = false, RedirectStandardOutput = true });
                        p.WaitForExit();
                        Check(p.ExitCode == 0, "rust writer exit");
                    }
                    Check(c.Get("from-rust-2") == "rust-value-2", "value written by a Rust process");
                    var r = Process.Start(new ProcessStartInfo(child, "get " + dir + " " + name + " greeting") { UseShellExecute = false, RedirectStandardOutput = true });
                    var text = r.StandardOutput.ReadToEnd().Trim();
                    r.WaitForExit();
                    Check(text == "hello from C#", "a Rust process reads what C# wrote: " + text);
                }

                // Versions, conditional writes, counters, waiting (issue 13).
                var ck = Encoding.UTF8.GetBytes("cas");
                ulong v1, v2, cur;
                Check(c.TryPutIfVersion(ck, Encoding.UTF8.GetBytes("one"), 0, out v1) && v1 != 0, "put if absent by version");
                Check(!c.TryPutIfVersion(ck, Encoding.UTF8.GetBytes("two"), 0, out cur) && cur == v1, "conflict reports the version");
                Check(c.TryPutIfVersion(ck, Encoding.UTF8.GetBytes("two"), v1, out v2) && v2 > v1, "put at the expected version");
                byte[] gv;
                ulong gver;
                Check(c.TryGetVersioned(ck, out gv, out gver) && gver == v2 && Encoding.UTF8.GetString(gv) == "two", "get versioned");
                Check(!c.TryRemoveIfVersion(ck, v1) && c.TryRemoveIfVersion(ck, v2), "remove if version");
                Check(c.PutIfAbsent(ck, new byte[] { 1 }) && !c.PutIfAbsent(ck, new byte[] { 2 }), "put if absent");
                Check(c.Append(ck, new byte[] { 3, 4 }) == 3, "append");
                Throws(KvStatus.NotAnInteger, () => c.Incr(ck, 1), "incr of a non-integer");
                Check(c.Incr("counter", 5) == 5 && c.Incr("counter", -2) == 3 && c.Get("counter") == "3", "incr");
                c.Put("max", "9223372036854775807");
                Throws(KvStatus.Overflow, () => c.Incr("max"), "incr overflow");
                var cnt = Encoding.UTF8.GetBytes("counter");
                ulong cv;
                c.TryGetVersioned(cnt, out gv, out cv);
                var sw = Stopwatch.StartNew();
                Check(!c.WaitChanged(cnt, cv, TimeSpan.FromMilliseconds(100), out gver) && sw.ElapsedMilliseconds >= 100, "wait times out");
                var t = new System.Threading.Thread(() =>
                {
                    System.Threading.Thread.Sleep(50);
                    using (var other = KvClient.Open(name)) other.Incr("counter");
                });
                t.Start();
                Check(c.WaitChanged(cnt, cv, TimeSpan.FromSeconds(20), out gver) && gver > cv, "wait sees a change");
                t.Join();
                Check(c.Get("counter") == "4", "counter after the other client's incr");
                Check(c.Replace(ck, new byte[] { 9 }) && !c.Replace(Encoding.UTF8.GetBytes("nope"), new byte[] { 1 }), "replace");
                ulong vck;
                c.TryGetVersioned(ck, out gv, out vck);
                int failedAt;
                var kA = Encoding.UTF8.GetBytes("txn-a");
                var okCommit = c.CommitIf(
                    new List<KeyValuePair<byte[], ulong>> { new KeyValuePair<byte[], ulong>(ck, vck), new KeyValuePair<byte[], ulong>(kA, vck) },
                    new List<KeyValuePair<byte[], byte[]>> { new KeyValuePair<byte[], byte[]>(kA, new byte[] { 1 }) },
                    new List<byte[]> { ck }, out failedAt);
                Check(!okCommit && failedAt == 1 && c.Get(kA) == null, "commit_if conflict names the failed check");
                okCommit = c.CommitIf(
                    new List<KeyValuePair<byte[], ulong>> { new KeyValuePair<byte[], ulong>(ck, vck), new KeyValuePair<byte[], ulong>(kA, 0) },
                    new List<KeyValuePair<byte[], byte[]>> { new KeyValuePair<byte[], byte[]>(kA, new byte[] { 1 }) },
                    new List<byte[]> { ck }, out failedAt);
                Check(okCommit && c.Get(kA) != null && c.Get(ck) == null, "commit_if applies all");
                // Expiry (issue 14).
                var tk = Encoding.UTF8.GetBytes("ttl");
                c.PutWithTtl(tk, new byte[] { 1 }, TimeSpan.FromMilliseconds(80));
                var left = c.Ttl(tk);
                Check(left.HasValue && left.Value > TimeSpan.Zero && left.Value <= TimeSpan.FromMilliseconds(80), "ttl");
                Check(c.Persist(tk) && c.Ttl(tk) == System.Threading.Timeout.InfiniteTimeSpan, "persist");
                Check(c.Expire(tk, TimeSpan.FromMilliseconds(50)) && !c.Expire(Encoding.UTF8.GetBytes("nope"), TimeSpan.FromSeconds(1)), "expire");
                System.Threading.Thread.Sleep(80);
                Check(c.Get(tk) == null && c.Ttl(tk) == null, "expired key is gone");
                // Eviction policy (issue 14): set and read back, for every process.
                Check(c.Eviction == EvictionPolicy.NoEviction && c.Evicted == 0, "no eviction by default");
                c.Eviction = EvictionPolicy.VolatileTtl;
                Check(c.Eviction == EvictionPolicy.VolatileTtl, "eviction policy set");
                c.Eviction = EvictionPolicy.NoEviction;
                c.Remove(tk);
                c.Remove(kA);
                c.Remove("counter");
                c.Remove("max");

                using (var ro = KvClient.OpenReadOnly(name))
                {
                    Check(ro.Get("greeting") == "hello from C#", "read-only get");
                    Throws(KvStatus.InvalidArgument, () => ro.Put("k", "v"), "read-only put");
                }
                c.Dispose();
                try { c.Put("k", "v"); failed++; Console.WriteLine("FAILED: use after dispose"); }
                catch (ObjectDisposedException) { passed++; }
            }
            Throws(KvStatus.StoreNotFound, () => KvClient.Open("no-such-store-csharp"), "missing store");
        }
        // Disposed host kept the data: adopt it, then release it for good.
        using (var again = KvHost.OpenExisting(name))
        {
            Check(again.Client.Get("greeting") == "hello from C#", "data kept across hosts");
            again.Release();
        }
        Throws(KvStatus.StoreNotFound, () => KvClient.Open(name), "released store is gone");
    }
}
