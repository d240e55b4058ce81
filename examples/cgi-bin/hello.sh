#!/bin/sh
# A CGI/1.1 script: a header block, a blank line, then the body (RFC 3875 §6).
printf 'Content-Type: text/plain\r\n\r\n'
printf 'hello from %s (PATH_INFO=%s, QUERY_STRING=%s)\n' "$SCRIPT_NAME" "$PATH_INFO" "$QUERY_STRING"
