# The trade-stream service (functions/trade-stream): `make package` stages this file next
# to the arm64 binary in .aws-sam/trade-stream/. Amazon Linux 2023 gives the same glibc
# and CA certificates as the Lambda runtime the other functions run on.
FROM public.ecr.aws/amazonlinux/amazonlinux:2023-minimal
COPY trade-stream /usr/local/bin/trade-stream
USER 1000
ENTRYPOINT ["/usr/local/bin/trade-stream"]
