/* reply: sends an answer whose headers and body are already on an evhttp
 * request. The one place that knows HEAD: libevent 2.1 writes a HEAD
 * answer's body and leaves out its Content-Length, which desynchronises a
 * keep-alive client; here the body is dropped and its length kept. */
#ifndef NCGHL_REPLY_H
#define NCGHL_REPLY_H

struct evhttp_request;

/* Sends req's output buffer as the answer (code, reason). For HEAD, the
 * headers only, with the Content-Length the body would have had. */
void reply_send(struct evhttp_request *req, int code, const char *reason);

#endif
