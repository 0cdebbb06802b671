# One image for the operator and every service. The default command, `kommerce serve`, serves
# the component named by KOMMERCE_COMPONENT (the CommerceService operator sets it in every Pod
# it renders, so a CommerceService without `args` serves its component); the operator's
# Deployment names its own command, `kommerce operator`. Multi-stage: wheels are built in the
# first stage, the runtime stage carries only the installed packages and runs as a non-root
# user. BASE is any image with Python 3.11 and pip on the PATH: the official Python image by
# default; the test bed's real node builds on a Debian base of its own, since nothing can be
# pulled there.
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kommerce ./kommerce
COPY operators ./operators
COPY services ./services
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --no-create-home kommerce
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 8000 8080 9090
ENTRYPOINT ["kommerce"]
CMD ["serve"]
