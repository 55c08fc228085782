// Batched raw ICMPv6 I/O for widescan (Linux): sendmmsg with binary destinations, recvmmsg drained on a
// uv_poll_t. The pure-JS path (raw-socket) costs one syscall, one event-loop wake-up and one address string
// per packet; here a syscall moves up to 1024 probes out or 256 replies in. lib/icmp6native.ts wraps this.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <netinet/icmp6.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

// sendmmsg takes at most UIO_MAXIOV (1024) messages per call.
#define SEND_BATCH 1024
#define RECEIVE_BATCH 256
// The IPv6 minimum MTU: any echo reply to a widescan probe fits; longer datagrams are truncated.
#define SLOT_BYTES 1280
// Batches per wake-up at most, so that a reply flood cannot starve timers and I/O (the poll is
// level-triggered: what is left wakes it again at once).
#define MAX_BATCHES_PER_WAKE 64
#define MAX_SOCKET_BUFFER_BYTES (1 << 30)

typedef struct {
  int fd;
  int receives; // ICMP6_FILTER passes at least one type
  int packet;   // an AF_PACKET socket bound to one interface (openPacket): sends whole frames, receives nothing
  napi_env env;
  uv_poll_t* poll;  // freed by its close callback
  int poll_closing; // uv_close called, its callback not yet run: this struct must live until then
  // Until this struct is freed or the environment exits: a worker's teardown waits for it, so that the
  // poll's close callback (code in this library) runs before the library is unloaded.
  napi_async_cleanup_hook_handle hook;
  int exiting;
  napi_ref self;   // held while polling: an active socket is not garbage
  napi_ref on_packets;
  napi_ref on_writable; // one-shot
  napi_ref buffer_ref, lengths_ref, sources_ref;
  napi_async_context async;
  uint8_t* buffer; // the JS arrays' memory, valid while their refs are held
  uint32_t* lengths;
  uint8_t* sources;
  struct mmsghdr* smsg;
  struct iovec* siov;
  struct sockaddr_in6* saddr;
  struct mmsghdr* rmsg;
  struct iovec* riov;
  struct sockaddr_in6* raddr;
  int busy;    // inside on_poll (JS may close or even drop the handle meanwhile)
  int js_gone; // the handle object was collected
} Icmp6;

static const napi_type_tag HANDLE_TAG = {0x9b1c3f5e2a7d4c61ULL, 0xd04e8a3b5f6c2917ULL};

static const char* errno_code(int err) {
  switch (err) {
#define E(x) \
  case x:    \
    return #x;
    E(EPERM) E(EACCES) E(EAGAIN) E(EBADF) E(EINVAL) E(ENOMEM) E(ENOBUFS) E(EMFILE) E(ENFILE) E(EAFNOSUPPORT)
    E(EPROTONOSUPPORT) E(ENOPROTOOPT) E(ENETUNREACH) E(EHOSTUNREACH) E(EMSGSIZE) E(EADDRNOTAVAIL) E(ENOSYS)
    E(ENODEV) E(ENXIO) E(ENETDOWN)
#undef E
    default:
      return "EUNKNOWN";
  }
}

static napi_value throw_errno(napi_env env, const char* what, int err) {
  char msg[320];
  const char* hint = "";
  if (err == EPERM || err == EACCES)
    hint = strstr(what, "AF_PACKET") ? "; widescan needs CAP_NET_RAW for packet sockets (run as root or grant it)"
                                     : "; widescan needs CAP_NET_RAW for raw ICMPv6 sockets (run as root or grant it)";
  snprintf(msg, sizeof msg, "%s failed: %s (%s)%s", what, strerror(err), errno_code(err), hint);
  napi_throw_error(env, errno_code(err), msg);
  return NULL;
}

#define CHECK(call)                                                                   \
  do {                                                                                \
    if ((call) != napi_ok) {                                                          \
      const napi_extended_error_info* info;                                           \
      bool pending = false;                                                           \
      napi_is_exception_pending(env, &pending);                                       \
      if (!pending) {                                                                 \
        napi_get_last_error_info(env, &info);                                         \
        napi_throw_error(env, NULL, info->error_message ? info->error_message : #call); \
      }                                                                               \
      return NULL;                                                                    \
    }                                                                                 \
  } while (0)

/** An integer in [min, max] from a JS number; throws a RangeError/TypeError naming `name` otherwise. */
static int get_integer(napi_env env, napi_value v, const char* name, double min, double max, double* out) {
  napi_valuetype type;
  char msg[200];
  if (napi_typeof(env, v, &type) != napi_ok || type != napi_number) {
    snprintf(msg, sizeof msg, "%s must be a number", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return 0;
  }
  double d;
  napi_get_value_double(env, v, &d);
  if (!(d >= min && d <= max) || d != (double)(int64_t)d) {
    snprintf(msg, sizeof msg, "%s must be an integer from %.0f to %.0f, got %g", name, min, max, d);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return 0;
  }
  *out = d;
  return 1;
}

static int get_bytes(napi_env env, napi_value v, const char* name, uint8_t** data, size_t* length) {
  bool is_typed = false;
  napi_typedarray_type type;
  char msg[200];
  napi_is_typedarray(env, v, &is_typed);
  if (is_typed) napi_get_typedarray_info(env, v, &type, length, (void**)data, NULL, NULL);
  if (!is_typed || type != napi_uint8_array) {
    snprintf(msg, sizeof msg, "%s must be a Buffer or Uint8Array", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return 0;
  }
  return 1;
}

/** The open socket behind a handle from open(); throws on anything else or on a closed one. */
static Icmp6* get_handle(napi_env env, napi_value v, int must_be_open) {
  napi_valuetype type;
  bool ours = false;
  Icmp6* h = NULL;
  if (napi_typeof(env, v, &type) != napi_ok || type != napi_object || napi_check_object_type_tag(env, v, &HANDLE_TAG, &ours) != napi_ok ||
      !ours || napi_unwrap(env, v, (void**)&h) != napi_ok || h == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a socket handle returned by open()");
    return NULL;
  }
  if (must_be_open && h->fd < 0) {
    napi_throw_error(env, "ERR_SOCKET_CLOSED", "the ICMPv6 socket is closed; open a new one");
    return NULL;
  }
  return h;
}

static void free_handle(Icmp6* h) {
  free(h->smsg);
  free(h->siov);
  free(h->saddr);
  free(h->rmsg);
  free(h->riov);
  free(h->raddr);
  free(h);
}

/** Frees the socket state once nothing can reach it: no JS object, no poll callback running or pending. */
static void maybe_free(Icmp6* h) {
  if (!h->js_gone || h->busy || h->poll_closing) return;
  if (h->hook) napi_remove_async_cleanup_hook(h->hook);
  free_handle(h);
}

static void poll_closed(uv_handle_t* poll) {
  Icmp6* h = poll->data;
  free(poll);
  h->poll_closing = 0;
  if (h->exiting && h->hook) {
    napi_remove_async_cleanup_hook(h->hook);
    h->hook = NULL;
  }
  maybe_free(h);
}

/** Stops polling and closes the socket; no JS involved (also runs when the environment exits). */
static void close_socket(Icmp6* h) {
  if (h->poll) {
    uv_close((uv_handle_t*)h->poll, poll_closed);
    h->poll = NULL;
    h->poll_closing = 1;
  }
  if (h->fd >= 0) {
    close(h->fd);
    h->fd = -1;
  }
}

static void on_env_exit(napi_async_cleanup_hook_handle hook, void* arg) {
  Icmp6* h = arg;
  h->hook = hook;
  h->exiting = 1;
  close_socket(h);
  if (!h->poll_closing) {
    napi_remove_async_cleanup_hook(h->hook);
    h->hook = NULL;
  }
}

static void delete_ref(napi_env env, napi_ref* ref) {
  if (*ref) {
    napi_delete_reference(env, *ref);
    *ref = NULL;
  }
}

static void release_js(napi_env env, Icmp6* h) {
  delete_ref(env, &h->self);
  delete_ref(env, &h->on_packets);
  delete_ref(env, &h->on_writable);
  delete_ref(env, &h->buffer_ref);
  delete_ref(env, &h->lengths_ref);
  delete_ref(env, &h->sources_ref);
  h->buffer = NULL;
  h->lengths = NULL;
  h->sources = NULL;
  // Inside on_poll the context is in use by napi_make_callback: on_poll destroys it on the way out.
  if (h->async && !h->busy) {
    napi_async_destroy(env, h->async);
    h->async = NULL;
  }
}

static void finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  Icmp6* h = data;
  h->js_gone = 1;
  close_socket(h);
  release_js(env, h);
  maybe_free(h);
}

static void on_poll(uv_poll_t* poll, int status, int events);

/** Polls for what is wanted now (readable while receiving, writable while a sender waits), or stops. */
static int update_poll(napi_env env, Icmp6* h, napi_value handle_object) {
  int events = (h->on_packets ? UV_READABLE : 0) | (h->on_writable ? UV_WRITABLE : 0);
  if (events == 0) {
    if (h->poll) uv_poll_stop(h->poll);
    delete_ref(env, &h->self);
    return 1;
  }
  if (!h->poll) {
    uv_loop_t* loop;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) return 0;
    h->poll = malloc(sizeof *h->poll);
    if (!h->poll) {
      throw_errno(env, "allocating a poll handle", ENOMEM);
      return 0;
    }
    int rc = uv_poll_init(loop, h->poll, h->fd);
    if (rc != 0) {
      free(h->poll);
      h->poll = NULL;
      throw_errno(env, "uv_poll_init", -rc);
      return 0;
    }
    h->poll->data = h;
  }
  if (!h->async) {
    napi_value name;
    napi_create_string_utf8(env, "widescan:icmp6", NAPI_AUTO_LENGTH, &name);
    if (napi_async_init(env, NULL, name, &h->async) != napi_ok) return 0;
  }
  if (!h->self && handle_object && napi_create_reference(env, handle_object, 1, &h->self) != napi_ok) return 0;
  int rc = uv_poll_start(h->poll, events, on_poll);
  if (rc != 0) {
    throw_errno(env, "uv_poll_start", -rc);
    return 0;
  }
  return 1;
}

/** Calls a JS callback from the event loop; an exception it throws becomes an uncaught exception. */
static int call_js(Icmp6* h, napi_ref ref, size_t argc, const napi_value* argv) {
  napi_env env = h->env;
  napi_value fn, recv, result;
  if (napi_get_reference_value(env, ref, &fn) != napi_ok || fn == NULL) return 0;
  napi_get_global(env, &recv); // napi_make_callback wants an object as `this`
  if (napi_make_callback(env, h->async, recv, fn, argc, argv, &result) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
    return 0;
  }
  return 1;
}

static void drain(Icmp6* h) {
  napi_env env = h->env;
  for (int batch = 0; batch < MAX_BATCHES_PER_WAKE && h->fd >= 0 && h->on_packets; batch++) {
    for (int i = 0; i < RECEIVE_BATCH; i++) h->rmsg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6); // the kernel wrote it
    int n = recvmmsg(h->fd, h->rmsg, RECEIVE_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; // EAGAIN: drained (any other error was reported to us and cleared by this call)
    for (int i = 0; i < n; i++) {
      h->lengths[i] = h->rmsg[i].msg_len;
      memcpy(h->sources + 16 * i, &h->raddr[i].sin6_addr, 16);
    }
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value argv[4];
    int ok = napi_get_reference_value(env, h->buffer_ref, &argv[0]) == napi_ok &&
             napi_get_reference_value(env, h->lengths_ref, &argv[1]) == napi_ok &&
             napi_get_reference_value(env, h->sources_ref, &argv[2]) == napi_ok && napi_create_uint32(env, (uint32_t)n, &argv[3]) == napi_ok;
    ok = ok && call_js(h, h->on_packets, 4, argv);
    napi_close_handle_scope(env, scope);
    if (!ok || n < RECEIVE_BATCH) return; // a short batch: the queue is empty (the poll wakes us for more)
  }
}

static void on_poll(uv_poll_t* poll, int status, int events) {
  Icmp6* h = poll->data;
  napi_env env = h->env;
  // An error (status < 0) is read back by the next syscall on the socket: let both sides make it.
  if (status < 0) events = UV_READABLE | UV_WRITABLE;
  h->busy++;
  if ((events & UV_WRITABLE) && h->on_writable) {
    napi_ref callback = h->on_writable;
    h->on_writable = NULL;
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      update_poll(env, h, NULL);
      call_js(h, callback, 0, NULL);
      napi_close_handle_scope(env, scope);
    }
    napi_delete_reference(env, callback);
  }
  if ((events & UV_READABLE) && h->fd >= 0 && h->on_packets) drain(h);
  h->busy--;
  if (h->busy == 0 && h->fd < 0 && h->async) {
    napi_async_destroy(env, h->async);
    h->async = NULL;
  }
  maybe_free(h);
}

static int get_optional_integer(napi_env env, napi_value options, const char* key, double min, double max, double* out, int* present) {
  napi_value v;
  napi_valuetype type;
  *present = 0;
  if (napi_get_named_property(env, options, key, &v) != napi_ok) return 0;
  napi_typeof(env, v, &type);
  if (type == napi_undefined) return 1;
  *present = 1;
  return get_integer(env, v, key, min, max, out);
}

/** SO_RCVBUFFORCE/SO_SNDBUFFORCE pass net.core.*mem_max with CAP_NET_ADMIN; without it, the capped option. */
static int set_buffer(napi_env env, int fd, int force_option, int option, double bytes, const char* what) {
  int value = (int)bytes;
  if (setsockopt(fd, SOL_SOCKET, force_option, &value, sizeof value) == 0) return 1;
  if (setsockopt(fd, SOL_SOCKET, option, &value, sizeof value) == 0) return 1;
  throw_errno(env, what, errno);
  return 0;
}

/** Wraps an open socket in a new type-tagged handle object; closes fd on failure. */
static napi_value wrap_socket(napi_env env, int fd, int receives, int packet) {
  napi_value result;
  Icmp6* h = calloc(1, sizeof *h);
  if (!h) {
    close(fd);
    return throw_errno(env, "allocating the socket state", ENOMEM);
  }
  h->fd = fd;
  h->env = env;
  h->receives = receives;
  h->packet = packet;
  if (napi_create_object(env, &result) != napi_ok || napi_type_tag_object(env, result, &HANDLE_TAG) != napi_ok ||
      napi_wrap(env, result, h, finalize, NULL, NULL) != napi_ok) {
    close(fd);
    free(h);
    napi_throw_error(env, NULL, "could not create the socket handle object");
    return NULL;
  }
  if (napi_add_async_cleanup_hook(env, on_env_exit, h, &h->hook) != napi_ok) h->hook = NULL; // then no teardown wait
  return result;
}

static napi_value Open(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], types_value;
  napi_valuetype type = napi_undefined;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc >= 1) napi_typeof(env, argv[0], &type);
  if (type != napi_object) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "open() takes an options object: { receiveTypes: number[], hopLimit?, receiveBufferBytes?, sendBufferBytes? }");
    return NULL;
  }
  bool is_array = false;
  CHECK(napi_get_named_property(env, argv[0], "receiveTypes", &types_value));
  napi_is_array(env, types_value, &is_array);
  if (!is_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "receiveTypes must be an array of ICMPv6 types (0 to 255); [] receives nothing");
    return NULL;
  }
  struct icmp6_filter filter;
  ICMP6_FILTER_SETBLOCKALL(&filter);
  uint32_t count;
  CHECK(napi_get_array_length(env, types_value, &count));
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    double t;
    CHECK(napi_get_element(env, types_value, i, &v));
    if (!get_integer(env, v, "each of receiveTypes", 0, 255, &t)) return NULL;
    ICMP6_FILTER_SETPASS((int)t, &filter);
  }
  double hops = 0, rcvbuf = 0, sndbuf = 0;
  int has_hops, has_rcvbuf, has_sndbuf;
  if (!get_optional_integer(env, argv[0], "hopLimit", 1, 255, &hops, &has_hops) ||
      !get_optional_integer(env, argv[0], "receiveBufferBytes", 1, MAX_SOCKET_BUFFER_BYTES, &rcvbuf, &has_rcvbuf) ||
      !get_optional_integer(env, argv[0], "sendBufferBytes", 1, MAX_SOCKET_BUFFER_BYTES, &sndbuf, &has_sndbuf))
    return NULL;

  int fd = socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMPV6);
  if (fd < 0) return throw_errno(env, "socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)", errno);
  int hop_value = (int)hops;
  if (setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "setsockopt(ICMP6_FILTER)", err);
  }
  if (has_hops && setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hop_value, sizeof hop_value) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "setsockopt(IPV6_UNICAST_HOPS)", err);
  }
  if ((has_rcvbuf && !set_buffer(env, fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf, "setsockopt(SO_RCVBUF)")) ||
      (has_sndbuf && !set_buffer(env, fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf, "setsockopt(SO_SNDBUF)"))) {
    close(fd);
    return NULL;
  }
  return wrap_socket(env, fd, count > 0, 0);
}

/** The open handle of a send call, which must be a packet socket (sendFrames) or not (sendBatch); NULL: thrown. */
static Icmp6* send_handle(napi_env env, napi_value v, int packet) {
  Icmp6* h = get_handle(env, v, 1);
  if (!h || h->packet == packet) return h;
  napi_throw_error(env, "ERR_INVALID_STATE",
                   packet ? "this is an ICMPv6 socket (open): it sends ICMPv6 messages with sendBatch, not frames"
                          : "this is a packet socket (openPacket): it sends whole frames with sendFrames, not sendBatch");
  return NULL;
}

/** The send state of a socket, allocated at its first send; with_addresses: one sockaddr per message. */
static int alloc_send(Icmp6* h, int with_addresses) {
  if (h->smsg) return 1;
  h->smsg = calloc(SEND_BATCH, sizeof *h->smsg);
  h->siov = calloc(SEND_BATCH, sizeof *h->siov);
  if (with_addresses) h->saddr = calloc(SEND_BATCH, sizeof *h->saddr);
  if (!h->smsg || !h->siov || (with_addresses && !h->saddr)) {
    free(h->smsg);
    free(h->siov);
    free(h->saddr);
    h->smsg = NULL, h->siov = NULL, h->saddr = NULL;
    return 0;
  }
  for (int k = 0; k < SEND_BATCH; k++) {
    if (with_addresses) {
      h->saddr[k].sin6_family = AF_INET6; // port, flow label and scope stay 0
      h->smsg[k].msg_hdr.msg_name = &h->saddr[k];
      h->smsg[k].msg_hdr.msg_namelen = sizeof h->saddr[k];
    } // else no address: a packet socket is bound to its interface
    h->smsg[k].msg_hdr.msg_iov = &h->siov[k];
    h->smsg[k].msg_hdr.msg_iovlen = 1;
  }
  return 1;
}

/**
 * Sends items [from, to), item i at base + i * stride (to addresses + i * 16 unless addresses is NULL), a
 * sendmmsg of up to SEND_BATCH at a time. Returns the errno that stopped it (0: all sent; it is about the
 * item at *next, and the caller decides whether to wait, skip it or stop); *next is the first item unsent.
 */
static int send_items(Icmp6* h, uint8_t* base, size_t stride, const uint8_t* addresses, size_t from, size_t to, size_t* next) {
  size_t i = from;
  int err = 0;
  while (i < to) {
    unsigned n = to - i < SEND_BATCH ? (unsigned)(to - i) : SEND_BATCH;
    for (unsigned k = 0; k < n; k++) {
      h->siov[k].iov_base = base + (i + k) * stride;
      h->siov[k].iov_len = stride;
      if (addresses) memcpy(&h->saddr[k].sin6_addr, addresses + (i + k) * 16, 16);
    }
    int sent = sendmmsg(h->fd, h->smsg, n, 0);
    if (sent < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    i += (size_t)sent;
  }
  *next = i;
  return err;
}

/** { sent, errno }, what sendBatch and sendFrames return. */
static napi_value send_result(napi_env env, double sent, int err) {
  napi_value result, v;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_double(env, sent, &v));
  CHECK(napi_set_named_property(env, result, "sent", v));
  CHECK(napi_create_int32(env, err, &v));
  CHECK(napi_set_named_property(env, result, "errno", v));
  return result;
}

static napi_value SendBatch(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "sendBatch(handle, packets, packetBytes, addresses, from, to)");
    return NULL;
  }
  Icmp6* h = send_handle(env, argv[0], 0);
  if (!h) return NULL;
  uint8_t *packets, *addresses;
  size_t packets_length, addresses_length;
  double packet_bytes, from_d, to_d;
  if (!get_bytes(env, argv[1], "packets", &packets, &packets_length) || !get_integer(env, argv[2], "packetBytes", 1, 65535, &packet_bytes) ||
      !get_bytes(env, argv[3], "addresses", &addresses, &addresses_length))
    return NULL;
  size_t pb = (size_t)packet_bytes;
  // Probes that both arrays hold in full.
  size_t capacity = packets_length / pb < addresses_length / 16 ? packets_length / pb : addresses_length / 16;
  if (!get_integer(env, argv[4], "from", 0, (double)capacity, &from_d) || !get_integer(env, argv[5], "to", from_d, (double)capacity, &to_d))
    return NULL;
  if (!alloc_send(h, 1)) return throw_errno(env, "allocating send buffers", ENOMEM);
  size_t next;
  int err = send_items(h, packets, pb, addresses, (size_t)from_d, (size_t)to_d, &next);
  return send_result(env, (double)(next - (size_t)from_d), err);
}

/**
 * openPacket(ifindex, sendBufferBytes?): an AF_PACKET socket bound to one interface, for frames that carry
 * their own link and IPv6 headers (masscan's way: no route lookup, neighbour resolution or IPv6 output per
 * packet). Protocol 0: it receives nothing, so a send-only scanner queues no copies of the link's traffic.
 */
static napi_value OpenPacket(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  napi_valuetype type = napi_undefined;
  double ifindex, sndbuf = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "openPacket(ifindex, sendBufferBytes?)");
    return NULL;
  }
  if (!get_integer(env, argv[0], "ifindex", 1, 2147483647, &ifindex)) return NULL;
  if (argc >= 2) napi_typeof(env, argv[1], &type);
  if (type != napi_undefined && !get_integer(env, argv[1], "sendBufferBytes", 1, MAX_SOCKET_BUFFER_BYTES, &sndbuf)) return NULL;
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_PACKET, SOCK_RAW)", errno);
  struct sockaddr_ll where;
  memset(&where, 0, sizeof where);
  where.sll_family = AF_PACKET;
  where.sll_protocol = 0; // bound for sending only: no protocol, no received frames
  where.sll_ifindex = (int)ifindex;
  if (bind(fd, (struct sockaddr*)&where, sizeof where) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "bind(AF_PACKET) to the interface", err);
  }
  if (type != napi_undefined && !set_buffer(env, fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf, "setsockopt(SO_SNDBUF)")) {
    close(fd);
    return NULL;
  }
  return wrap_socket(env, fd, 0, 1);
}

/**
 * sendFrames(handle, frames, frameBytes, from, to): frames [from, to), frame i at frames[i * frameBytes], on a
 * packet socket. Returns { sent, errno } like sendBatch: errno is about frame from + sent.
 */
static napi_value SendFrames(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "sendFrames(handle, frames, frameBytes, from, to)");
    return NULL;
  }
  Icmp6* h = send_handle(env, argv[0], 1);
  if (!h) return NULL;
  uint8_t* frames;
  size_t frames_length;
  double frame_bytes, from_d, to_d;
  // 14 bytes of Ethernet header at least; 65535 + the link and IPv6 headers at most.
  if (!get_bytes(env, argv[1], "frames", &frames, &frames_length) || !get_integer(env, argv[2], "frameBytes", 14, 65535 + 54, &frame_bytes)) return NULL;
  size_t fb = (size_t)frame_bytes;
  size_t capacity = frames_length / fb;
  if (!get_integer(env, argv[3], "from", 0, (double)capacity, &from_d) || !get_integer(env, argv[4], "to", from_d, (double)capacity, &to_d)) return NULL;
  if (!alloc_send(h, 0)) return throw_errno(env, "allocating send buffers", ENOMEM);
  size_t next;
  int err = send_items(h, frames, fb, NULL, (size_t)from_d, (size_t)to_d, &next);
  return send_result(env, (double)(next - (size_t)from_d), err);
}

static int get_function(napi_env env, napi_value v, const char* name) {
  napi_valuetype type;
  char msg[120];
  napi_typeof(env, v, &type);
  if (type == napi_function) return 1;
  snprintf(msg, sizeof msg, "%s must be a function", name);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return 0;
}

static napi_value StartReceiving(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL}, buffer, lengths_ab, lengths, sources_ab, sources;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Icmp6* h = get_handle(env, argv[0], 1);
  if (!h || !get_function(env, argv[1], "callback")) return NULL;
  if (h->on_packets) {
    napi_throw_error(env, "ERR_INVALID_STATE", "this socket is receiving already; one callback per socket");
    return NULL;
  }
  if (h->packet) {
    napi_throw_error(env, "ERR_INVALID_STATE", "this is a packet socket (openPacket): it sends frames and receives nothing");
    return NULL;
  }
  if (!h->receives) {
    napi_throw_error(env, "ERR_INVALID_STATE", "this socket was opened with receiveTypes: [] and receives nothing; name the ICMPv6 types to receive");
    return NULL;
  }
  if (!h->rmsg) {
    h->rmsg = calloc(RECEIVE_BATCH, sizeof *h->rmsg);
    h->riov = calloc(RECEIVE_BATCH, sizeof *h->riov);
    h->raddr = calloc(RECEIVE_BATCH, sizeof *h->raddr);
    if (!h->rmsg || !h->riov || !h->raddr) return throw_errno(env, "allocating receive buffers", ENOMEM);
    for (int i = 0; i < RECEIVE_BATCH; i++) {
      h->rmsg[i].msg_hdr.msg_name = &h->raddr[i];
      h->rmsg[i].msg_hdr.msg_iov = &h->riov[i];
      h->rmsg[i].msg_hdr.msg_iovlen = 1;
    }
  }
  void *buffer_data, *lengths_data, *sources_data;
  CHECK(napi_create_buffer(env, (size_t)RECEIVE_BATCH * SLOT_BYTES, &buffer_data, &buffer));
  CHECK(napi_create_arraybuffer(env, RECEIVE_BATCH * 4, &lengths_data, &lengths_ab));
  CHECK(napi_create_typedarray(env, napi_uint32_array, RECEIVE_BATCH, lengths_ab, 0, &lengths));
  CHECK(napi_create_arraybuffer(env, RECEIVE_BATCH * 16, &sources_data, &sources_ab));
  CHECK(napi_create_typedarray(env, napi_uint8_array, RECEIVE_BATCH * 16, sources_ab, 0, &sources));
  CHECK(napi_create_reference(env, buffer, 1, &h->buffer_ref));
  CHECK(napi_create_reference(env, lengths, 1, &h->lengths_ref));
  CHECK(napi_create_reference(env, sources, 1, &h->sources_ref));
  h->buffer = buffer_data;
  h->lengths = lengths_data;
  h->sources = sources_data;
  for (int i = 0; i < RECEIVE_BATCH; i++) {
    h->riov[i].iov_base = h->buffer + (size_t)i * SLOT_BYTES;
    h->riov[i].iov_len = SLOT_BYTES;
  }
  CHECK(napi_create_reference(env, argv[1], 1, &h->on_packets));
  if (!update_poll(env, h, argv[0])) return NULL;
  return NULL;
}

static napi_value WaitWritable(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Icmp6* h = get_handle(env, argv[0], 1);
  if (!h || !get_function(env, argv[1], "callback")) return NULL;
  if (h->on_writable) {
    napi_throw_error(env, "ERR_INVALID_STATE", "a writability wait is pending already; share it");
    return NULL;
  }
  CHECK(napi_create_reference(env, argv[1], 1, &h->on_writable));
  if (!update_poll(env, h, argv[0])) return NULL;
  return NULL;
}

static napi_value SetHopLimit(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2] = {NULL, NULL};
  double hops;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Icmp6* h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  if (h->packet) {
    napi_throw_error(env, "ERR_INVALID_STATE", "this is a packet socket (openPacket): the hop limit is in the frames it is given");
    return NULL;
  }
  if (argc < 2 || !get_integer(env, argv[1], "hopLimit", 1, 255, &hops)) {
    if (argc < 2) napi_throw_type_error(env, "ERR_MISSING_ARGS", "setHopLimit(handle, hops)");
    return NULL;
  }
  int value = (int)hops;
  if (setsockopt(h->fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &value, sizeof value) != 0) return throw_errno(env, "setsockopt(IPV6_UNICAST_HOPS)", errno);
  return NULL;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1] = {NULL};
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Icmp6* h = get_handle(env, argv[0], 0);
  if (!h) return NULL;
  close_socket(h);
  release_js(env, h);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"open", NULL, Open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendBatch", NULL, SendBatch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openPacket", NULL, OpenPacket, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendFrames", NULL, SendFrames, NULL, NULL, NULL, napi_enumerable, NULL},
      {"startReceiving", NULL, StartReceiving, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitWritable", NULL, WaitWritable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setHopLimit", NULL, SetHopLimit, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, Close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  napi_value v;
  napi_create_uint32(env, SLOT_BYTES, &v);
  napi_set_named_property(env, exports, "slotBytes", v);
  return exports;
}
