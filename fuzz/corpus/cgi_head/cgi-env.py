Content-Type: text/plain; charset=utf-8
Content-Length: 5
Set-Cookie: s=1; Path=/

env!