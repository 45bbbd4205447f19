"""Send numbered messages to a local user over port 25, one transaction each, until N are sent
or the server goes away; append each number that got its 250 to ACKFILE (flushed at once).

usage: smtp_sender.py SMTP_PORT RCPT N ACKFILE"""
import smtplib
import sys

port, rcpt, n, ackfile = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
acks = open(ackfile, "a")
try:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    for i in range(n):
        msg = f"From: load@example.org\r\nSubject: crash-test {i}\r\nX-Seq: {i}\r\n\r\nmessage number {i}\r\n"
        s.sendmail("load@example.org", [rcpt], msg.encode())
        acks.write(f"{i}\n")
        acks.flush()
    s.quit()
except (OSError, smtplib.SMTPException) as e:
    print("stopped:", type(e).__name__, e)
print("sent", n)
