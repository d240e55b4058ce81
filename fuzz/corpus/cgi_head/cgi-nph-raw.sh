HTTP/1.1 200 Fine Thanks
Content-Type: text/plain
X-Nph: 1

raw
