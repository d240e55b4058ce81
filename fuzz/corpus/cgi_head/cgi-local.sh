Location: /cgi-bin/hello.sh?from=local

