// Minimal types for the CommonJS `raw-socket` package, which ships none; only what widescan uses.
declare module 'raw-socket' {
  namespace raw {
    const AddressFamily: { readonly IPv4: number; readonly IPv6: number };
    const Protocol: { readonly None: number; readonly ICMP: number; readonly ICMPv6: number };
    const SocketLevel: { readonly SOL_SOCKET: number; readonly IPPROTO_IPV6: number };
    const SocketOption: {
      readonly SO_RCVBUF: number;
      readonly SO_SNDBUF: number;
      readonly SO_BINDTODEVICE: number;
      readonly IPV6_UNICAST_HOPS: number;
    };

    interface SocketOptions {
      addressFamily?: number;
      protocol?: number;
      /** Receive buffer per datagram, bytes (default 4096). */
      bufferSize?: number;
    }

    interface Socket {
      /** For ICMPv6 the kernel fills in the checksum. */
      send(
        buffer: Buffer,
        offset: number,
        length: number,
        address: string,
        afterCallback: (error: Error | null, bytes: number) => void,
      ): this;
      close(): this;
      setOption(level: number, option: number, value: number | Buffer, length?: number): void;
      pauseRecv(): this;
      resumeRecv(): this;
      pauseSend(): this;
      resumeSend(): this;
      /** For ICMPv6 `buffer` starts at the ICMPv6 header (no IPv6 header). */
      on(event: 'message', listener: (buffer: Buffer, source: string) => void): this;
      on(event: 'error', listener: (error: Error) => void): this;
      on(event: 'close', listener: () => void): this;
    }

    function createSocket(options?: SocketOptions): Socket;
  }
  export = raw;
}
