using System;

namespace KvShm
{
    /// <summary>Creation parameters of a store (defaults as in the C ABI).</summary>
    public sealed class KvConfig
    {
        public ulong InitialSize = 4UL << 20;
        public ulong MaxSize = 8UL << 30;
        public ulong MaxKeyLen = 1024;
        public ulong MaxValueLen = 1UL << 20;
        public uint Stripes = 1024;
        /// <summary>Permission bits of the store file (octal 0600 = 384).</summary>
        public uint Mode = 384;
        /// <summary>Directory of the store file; null for $KVSHM_DIR or /dev/shm.</summary>
        public string Dir;
    }

    /// <summary>The owner of a store: creates it, keeps it until <see cref="Release"/>.
    /// Disposing stops hosting and keeps the data for the next host.</summary>
    public sealed class KvHost : IDisposable
    {
        private readonly HostHandle _h;
        private KvClient _client;

        private KvHost(HostHandle h) { _h = h; }

        /// <summary>Create and host a new store (throws Exists if it is there already).</summary>
        public static KvHost Create(string name, KvConfig config = null)
        {
            var c = config ?? new KvConfig();
            NativeConfig nc;
            Native.Check(Native.kvshm_config_default(out nc));
            nc.InitialSize = c.InitialSize;
            nc.MaxSize = c.MaxSize;
            nc.MaxKeyLen = new UIntPtr(c.MaxKeyLen);
            nc.MaxValueLen = new UIntPtr(c.MaxValueLen);
            nc.Stripes = c.Stripes;
            nc.Mode = c.Mode;
            var dir = Native.CString(c.Dir);
            var pin = dir == null ? default(System.Runtime.InteropServices.GCHandle)
                                  : System.Runtime.InteropServices.GCHandle.Alloc(dir, System.Runtime.InteropServices.GCHandleType.Pinned);
            try
            {
                nc.Dir = dir == null ? IntPtr.Zero : pin.AddrOfPinnedObject();
                IntPtr p;
                Native.Check(Native.kvshm_host_create(Native.CString(name), ref nc, out p));
                var h = new HostHandle();
                h.Set(p);
                return new KvHost(h);
            }
            finally
            {
                if (dir != null) pin.Free();
            }
        }

        /// <summary>Become the host of an existing store (after a host restart).</summary>
        public static KvHost OpenExisting(string name, string dir = null)
        {
            IntPtr p;
            Native.Check(Native.kvshm_host_open_existing(Native.CString(name), Native.CString(dir), out p));
            var h = new HostHandle();
            h.Set(p);
            return new KvHost(h);
        }

        /// <summary>The host's own client (a host is also a client).</summary>
        public KvClient Client
        {
            get
            {
                if (_client == null)
                {
                    bool added = false;
                    try
                    {
                        _h.DangerousAddRef(ref added);
                        IntPtr p;
                        Native.Check(Native.kvshm_host_client(_h.DangerousGetHandle(), out p));
                        var ch = new ClientHandle();
                        ch.Set(p);
                        _client = new KvClient(ch);
                    }
                    finally
                    {
                        if (added) _h.DangerousRelease();
                    }
                }
                return _client;
            }
        }

        /// <summary>Remove the store for good and stop hosting.</summary>
        public void Release()
        {
            if (_client != null) _client.Dispose();
            bool added = false;
            try
            {
                _h.DangerousAddRef(ref added);
                Native.Check(Native.kvshm_host_release(_h.DangerousGetHandle()));
            }
            finally
            {
                if (added) _h.DangerousRelease();
            }
            _h.SetHandleAsInvalid();
        }

        /// <summary>Stop hosting; the data stays for the next host.</summary>
        public void Dispose()
        {
            if (_client != null) _client.Dispose();
            _h.Dispose();
        }
    }
}
