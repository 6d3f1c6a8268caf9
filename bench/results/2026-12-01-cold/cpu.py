import socket,time,statistics as st,json,sys,glob
stream=sys.argv[1]=="1"; N=int(sys.argv[2]); port=int(sys.argv[3]); pid=sys.argv[4]; gap=float(sys.argv[5])
body=json.dumps({"model":"mock","messages":[{"role":"user","content":"Say hello."}],"max_tokens":32,"stream":stream}).encode()
req=b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"%len(body)+body
def cpu(): return sum(int(open(f).read().split()[0]) for f in glob.glob(f"/proc/{pid}/task/*/schedstat"))
s=socket.create_connection(("127.0.0.1",port)); s.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)
def one():
    t=time.perf_counter(); s.sendall(req); d=s.recv(65536); t1=time.perf_counter(); buf=d
    if stream:
        while not buf.endswith(b"0\r\n\r\n"): buf+=s.recv(65536)
    else:
        h,_,b=buf.partition(b"\r\n\r\n")
        n=int([l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(b)<n: b+=s.recv(65536)
    return t1-t
for _ in range(20): one()
c0=cpu(); lat=[]
for i in range(N):
    lat.append(one())
    if gap: time.sleep(gap)
c1=cpu()
print(f"port {port} stream={int(stream)} gap {gap*1000:.1f}ms: first-recv p50 {st.median(lat)*1e3:.3f} ms; target CPU {(c1-c0)/N/1000:.1f} us/request")
