/*
 * s3_xml.h — just enough XML for S3's answers (ListBucketResult, Error,
 * InitiateMultipartUploadResult, DeleteResult, CompleteMultipartUploadResult).
 *
 * A non-validating pull over a complete document in memory (S3 answers are
 * small and read into a capped buffer first). It reports each element's open
 * and close with its path of local names ("ListBucketResult/Contents/Key");
 * the close carries the element's own text with entities and CDATA decoded.
 * Declarations, comments, processing instructions and attributes are skipped;
 * namespace prefixes are dropped. Anything malformed (unbalanced tags, a bad
 * entity, too deep, too long) is an error, never a guess.
 */
#ifndef LITEVISOR_S3_XML_H
#define LITEVISOR_S3_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "replication/s3_buf.h"

enum s3_xml_event { S3_XML_OPEN, S3_XML_CLOSE };

/*
 * Called for each event. text/len: the decoded text directly inside the
 * element (CLOSE only; "" for OPEN). Return 0 to go on, anything else stops
 * the parse and is returned by s3_xml_parse.
 */
typedef int (*s3_xml_cb)(void *ctx, enum s3_xml_event ev, const char *path,
			 const char *text, size_t len);

/* Parse a document. Returns 0, -1 if malformed (why set, if given), or the callback's value. */
int s3_xml_parse(const char *xml, size_t len, s3_xml_cb cb, void *ctx, char *why, size_t whylen);

/*
 * Does xml/len look like the start of a document with root element root (or
 * an S3 <Error>), cut short: nothing, or text that ends inside an element,
 * tag, comment or entity, whose first element (if it got that far) is one
 * of those? A whole document, one malformed before its end, or another kind
 * of page (a web server's HTML) is not.
 */
bool s3_xml_cut_short(const char *xml, size_t len, const char *root);

/*
 * Find <Error><Code>…</Code><Message>…</Message></Error> (S3's error shape).
 * Returns 0 with code/message filled (possibly ""), or -1 if the document is
 * not an S3 error.
 */
int s3_xml_error(const char *xml, size_t len, char *code, size_t codelen, char *msg, size_t msglen);

/*
 * Is xml/len a document whose root element is root? (An answer of 200 may
 * be anything: an <Error>, a proxy's HTML page, nothing at all.) Only the
 * start is read: the rest of a document that answers yes is not checked.
 */
bool s3_xml_root_is(const char *xml, size_t len, const char *root);

/* Append s with & < > " ' escaped. Returns 0 or -1 (buffer full). */
int s3_xml_escape(struct s3_buf *b, const char *s);

#endif
