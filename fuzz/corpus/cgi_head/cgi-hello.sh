Content-Type: text/plain

hello from /cgi-bin/x (PATH_INFO=/a/b, QUERY_STRING=q=1)
