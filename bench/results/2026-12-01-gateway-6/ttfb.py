import socket,time,statistics as st,json,sys
stream=sys.argv[1]=="1"; GAP=float(sys.argv[3]) if len(sys.argv)>3 else 0
body=json.dumps({"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":32,"stream":stream}).encode()
def conn(port):
    s=socket.create_connection(("127.0.0.1",port)); s.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1); return s
def one(s):
    req=b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"%len(body)+body
    t=time.perf_counter(); s.sendall(req); d=s.recv(65536); t1=time.perf_counter()
    buf=d
    if stream:
        while not buf.endswith(b"0\r\n\r\n"): buf+=s.recv(65536)
    else:
        h,_,b=buf.partition(b"\r\n\r\n")
        n=int([l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(b)<n: b+=s.recv(65536)
    return t1-t
socks={p:conn(p) for p in (8096,8097,18000)}
res={p:[] for p in socks}
for i in range(int(sys.argv[2])):
    for p,s in socks.items():
        res[p].append(one(s)); time.sleep(GAP)
for p,v in res.items():
    v=v[20:]
    print('stream' if stream else 'json', p, 'ttfb p50 %.3f ms p90 %.3f'%(st.median(v)*1000, sorted(v)[int(len(v)*0.9)]*1000))
