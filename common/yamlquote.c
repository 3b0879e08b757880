/*
 * yamlquote.c — read a value that is itself one YAML quoted scalar
 * (common/yamlquote.h), with libyaml, as the config file itself is read.
 */
#include "common/yamlquote.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/banned.h"

int yaml_unquote(char *s, char *why, size_t whylen)
{
	yaml_parser_t p;
	yaml_event_t ev;
	size_t n = strlen(s), got = 0;
	int rc = -1;
	bool done = false, have = false;

	if (!yaml_parser_initialize(&p)) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)s, n);
	char *out = NULL;
	while (!done) {
		if (!yaml_parser_parse(&p, &ev)) {
			snprintf(why, whylen, "YAML cannot read it: %s%s%s", p.context ? p.context : "",
				 p.context ? ", " : "", p.problem ? p.problem : "a syntax error");
			goto out;
		}
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_SCALAR_EVENT:
			if (have || ev.data.scalar.anchor || ev.data.scalar.tag ||
			    (ev.data.scalar.style != YAML_SINGLE_QUOTED_SCALAR_STYLE &&
			     ev.data.scalar.style != YAML_DOUBLE_QUOTED_SCALAR_STYLE)) {
				snprintf(why, whylen, "text follows its closing quote");
				yaml_event_delete(&ev);
				goto out;
			}
			got = ev.data.scalar.length;
			/* the content is never longer than its quoted form, which s holds */
			if (got > n || memchr(ev.data.scalar.value, '\0', got)) {
				snprintf(why, whylen, "it holds a NUL byte");
				yaml_event_delete(&ev);
				goto out;
			}
			/* a copy: the parser may not have read all of s yet */
			if (!(out = malloc(got + 1))) {
				snprintf(why, whylen, "out of memory");
				yaml_event_delete(&ev);
				goto out;
			}
			memcpy(out, ev.data.scalar.value, got);
			have = true;
			break;
		default: /* a second document, a map, a list: not one quoted string */
			snprintf(why, whylen, "text follows its closing quote");
			yaml_event_delete(&ev);
			goto out;
		}
		yaml_event_delete(&ev);
	}
	if (!have) {
		snprintf(why, whylen, "YAML reads no value in it");
		goto out;
	}
	memcpy(s, out, got);
	s[got] = '\0';
	rc = 0;
out:
	free(out);
	yaml_parser_delete(&p);
	return rc;
}
