using System;
using System.Runtime.InteropServices;

namespace KvShm
{
    /// <summary>Status codes of the C ABI (kvshm_status); values are fixed.</summary>
    /// <summary>What a full store does (Redis's maxmemory-policy names; kvshm_set_eviction).</summary>
    public enum EvictionPolicy : uint
    {
        NoEviction = 0,
        AllKeysLru = 1,
        VolatileLru = 2,
        AllKeysRandom = 3,
        VolatileTtl = 4,
        VolatileRandom = 5,
    }

    public enum KvStatus
    {
        Ok = 0,
        NotFound = 1,
        BufferTooSmall = 2,
        KeyTooLong = 3,
        ValueTooLong = 4,
        StoreFull = 5,
        StoreNotFound = 6,
        Exists = 7,
        Incompatible = 8,
        Corrupt = 9,
        PermissionDenied = 10,
        Io = 11,
        InvalidArgument = 12,
        Panic = 13,
        HostRunning = 14,
        Busy = 15,
        BadSnapshot = 16,
        BatchTooLarge = 17,
        TxnLogFull = 18,
        TooManyClients = 19,
        Forked = 20,
        /// <summary>A conditional write found another version; nothing changed.</summary>
        Conflict = 21,
        /// <summary>Incr on a value that is not a decimal 64-bit integer.</summary>
        NotAnInteger = 22,
        /// <summary>Incr would overflow a signed 64-bit integer.</summary>
        Overflow = 23,
        /// <summary>The store is a read-only replica: write to its primary.</summary>
        ReadOnly = 24,
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeConfig
    {
        public ulong InitialSize;
        public ulong MaxSize;
        public UIntPtr MaxKeyLen;
        public UIntPtr MaxValueLen;
        public uint Stripes;
        public uint Mode;
        public IntPtr Dir;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeBytes
    {
        public IntPtr Ptr;
        public UIntPtr Len;
    }

    /// <summary>Store metrics (kvshm_stats).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct KvStats
    {
        public ulong Keys;
        public ulong ValueBytes;
        public ulong CommittedBytes;
        public ulong UsedBytes;
        public ulong FreeBytes;
        public ulong MaxBytes;
        public ulong Gets;
        public ulong Hits;
        public ulong Puts;
        public ulong Removes;
        public ulong Clients;
        public ulong Recoveries;
        public ulong Growths;
        /// <summary>0 when no host runs.</summary>
        public ulong HostPid;
        public ulong MaxKeyLen;
        public ulong MaxValueLen;
    }

    /// <summary>P/Invoke declarations. "kvshm" resolves to kvshm.dll on Windows and
    /// libkvshm.so on Linux.</summary>
    internal static class Native
    {
        private const string Lib = "kvshm";
        private const CallingConvention CC = CallingConvention.Cdecl;

        [DllImport(Lib, CallingConvention = CC)] internal static extern IntPtr kvshm_strerror(int status);
        [DllImport(Lib, CallingConvention = CC)] internal static extern UIntPtr kvshm_last_error(byte[] buf, UIntPtr len);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_config_default(out NativeConfig cfg);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_host_create(byte[] name, ref NativeConfig cfg, out IntPtr host);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_host_open_existing(byte[] name, byte[] dir, out IntPtr host);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_host_client(IntPtr host, out IntPtr client);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_host_close(IntPtr host);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_host_release(IntPtr host);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_client_open(byte[] name, byte[] dir, out IntPtr client);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_client_open_read_only(byte[] name, byte[] dir, out IntPtr client);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_client_close(IntPtr client);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_put(IntPtr client, byte[] key, UIntPtr keyLen, byte[] value, UIntPtr valueLen);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_get(IntPtr client, byte[] key, UIntPtr keyLen, [In, Out] byte[] buf, UIntPtr bufLen, out UIntPtr valueLen);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_remove(IntPtr client, byte[] key, UIntPtr keyLen, [MarshalAs(UnmanagedType.U1)] out bool existed);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_contains(IntPtr client, byte[] key, UIntPtr keyLen, [MarshalAs(UnmanagedType.U1)] out bool found);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_len(IntPtr client, out ulong len);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_put_many(IntPtr client, NativeBytes[] keys, NativeBytes[] values, UIntPtr n);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_get_many(IntPtr client, NativeBytes[] keys, UIntPtr n, [In, Out] byte[] buf, UIntPtr bufLen, [In, Out] UIntPtr[] valueLens, out UIntPtr needed);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_remove_many(IntPtr client, NativeBytes[] keys, UIntPtr n, out UIntPtr removed);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_get_versioned(IntPtr client, byte[] key, UIntPtr keyLen, [In, Out] byte[] buf, UIntPtr bufLen, out UIntPtr valueLen, out ulong version);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_put_if_version(IntPtr client, byte[] key, UIntPtr keyLen, byte[] value, UIntPtr valueLen, ulong expected, out ulong newVersion, out ulong current);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_remove_if_version(IntPtr client, byte[] key, UIntPtr keyLen, ulong expected, out ulong current);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_put_if_absent(IntPtr client, byte[] key, UIntPtr keyLen, byte[] value, UIntPtr valueLen, [MarshalAs(UnmanagedType.U1)] out bool stored);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_replace(IntPtr client, byte[] key, UIntPtr keyLen, byte[] value, UIntPtr valueLen, [MarshalAs(UnmanagedType.U1)] out bool stored);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_commit_if(IntPtr client, NativeBytes[] checkKeys, ulong[] checkVersions, UIntPtr nChecks, NativeBytes[] putKeys, NativeBytes[] putValues, UIntPtr nPuts, NativeBytes[] removeKeys, UIntPtr nRemoves, out UIntPtr failedCheck, out ulong current);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_put_ttl(IntPtr client, byte[] key, UIntPtr keyLen, byte[] value, UIntPtr valueLen, ulong ttlMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_expire(IntPtr client, byte[] key, UIntPtr keyLen, ulong ttlMs, [MarshalAs(UnmanagedType.U1)] out bool found);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_persist(IntPtr client, byte[] key, UIntPtr keyLen, [MarshalAs(UnmanagedType.U1)] out bool had);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_ttl(IntPtr client, byte[] key, UIntPtr keyLen, out long ttlMs);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_set_eviction(IntPtr client, uint policy);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_get_eviction(IntPtr client, out uint policy, out ulong evicted);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_incr(IntPtr client, byte[] key, UIntPtr keyLen, long delta, out long result);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_append(IntPtr client, byte[] key, UIntPtr keyLen, byte[] data, UIntPtr dataLen, out UIntPtr newLen);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_wait_changed(IntPtr client, byte[] key, UIntPtr keyLen, ulong since, ulong timeoutMs, [MarshalAs(UnmanagedType.U1)] out bool changed, out ulong version);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_get_stats(IntPtr client, out KvStats stats);
        [DllImport(Lib, CallingConvention = CC)] internal static extern KvStatus kvshm_verify(IntPtr client, out ulong problems, [In, Out] byte[] report, UIntPtr reportLen);

        /// <summary>NUL-terminated UTF-8 for a string argument (null stays null).</summary>
        internal static byte[] CString(string s)
        {
            if (s == null) return null;
            var b = System.Text.Encoding.UTF8.GetBytes(s);
            Array.Resize(ref b, b.Length + 1);
            return b;
        }

        internal static UIntPtr Len(byte[] b) { return new UIntPtr((ulong)(b == null ? 0 : b.Length)); }

        internal static string LastError()
        {
            var buf = new byte[1024];
            var n = (int)Native.kvshm_last_error(buf, new UIntPtr((ulong)buf.Length)).ToUInt64();
            return System.Text.Encoding.UTF8.GetString(buf, 0, Math.Min(n, buf.Length - 1));
        }

        internal static void Check(KvStatus s)
        {
            if (s != KvStatus.Ok) throw new KvShmException(s, LastError());
        }
    }

    /// <summary>A failed kvshm call; <see cref="Status"/> says which kind.</summary>
    public class KvShmException : Exception
    {
        /// <summary>The C ABI status.</summary>
        public KvStatus Status { get; }

        public KvShmException(KvStatus status, string message)
            : base(string.IsNullOrEmpty(message) ? StatusText(status) : message)
        {
            Status = status;
        }

        /// <summary>kvshm_strerror of a status.</summary>
        public static string StatusText(KvStatus status)
        {
            return Marshal.PtrToStringAnsi(Native.kvshm_strerror((int)status));
        }
    }

    internal sealed class ClientHandle : SafeHandle
    {
        public ClientHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        internal void Set(IntPtr h) { SetHandle(h); }
        protected override bool ReleaseHandle() { return Native.kvshm_client_close(handle) == KvStatus.Ok; }
    }

    internal sealed class HostHandle : SafeHandle
    {
        public HostHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        internal void Set(IntPtr h) { SetHandle(h); }
        protected override bool ReleaseHandle() { return Native.kvshm_host_close(handle) == KvStatus.Ok; }
    }
}
