#include "reply.h"

#include <stdio.h>

#include <event2/buffer.h>
#include <event2/http.h>

void reply_send(struct evhttp_request *req, int code, const char *reason) {
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    size_t len = evbuffer_get_length(out);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (!evhttp_find_header(h, "Content-Length")) {
      char n[24];
      snprintf(n, sizeof n, "%zu", len);
      evhttp_add_header(h, "Content-Length", n);
    }
    evbuffer_drain(out, len);
  }
  evhttp_send_reply(req, code, reason, NULL);
}
