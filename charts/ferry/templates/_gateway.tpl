{{/* One gateway (Deployment, Service, optional Gateway, HPA, PDB) from its values: the
ingress gateway (`gateway`) and the optional egress gateway (`egressGateway`, the same values
with its own overrides). Called with (dict "root" $ "gw" <values>). */}}
{{- define "ferry.gateway" -}}
{{- $root := .root }}
{{- $gw := .gw }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $gw.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferry.labels" $root | nindent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $gw.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferry.labels" $root | nindent 4 }}
    app.kubernetes.io/component: gateway
spec:
  {{- if not $gw.autoscaling.enabled }}
  replicas: {{ $gw.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- toYaml $gw.labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- toYaml $gw.labels | nindent 8 }}
        gateway.networking.k8s.io/gateway-name: {{ $gw.name }}
        app.kubernetes.io/component: gateway
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "15020"
        prometheus.io/path: /stats/prometheus
        {{- with $gw.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $gw.name }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # Listener ports are bound as the manifests write them (80, 443): let the
      # unprivileged proxy bind low ports, as Istio's gateway chart does.
      securityContext:
        runAsNonRoot: true
        runAsUser: 1337
        runAsGroup: 1337
        seccompProfile: {type: RuntimeDefault}
        sysctls:
          - name: net.ipv4.ip_unprivileged_port_start
            value: "0"
      terminationGracePeriodSeconds: 30
      containers:
        - name: gateway
          image: {{ include "ferry.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - gateway
            - --controller={{ include "ferry.controllerAddress" $root }}
            - --scope={{ $root.Release.Namespace }}/{{ $gw.name }}
            # Admin (/config_dump, /logging) stays on loopback; the cluster reaches the
            # read-only status port (probes, metrics).
            - --admin=127.0.0.1:15000
            - --status=0.0.0.0:15020
            {{- range $key, $value := $gw.labels }}
            - --label={{ $key }}={{ $value }}
            {{- end }}
            - --ingress-port={{ $gw.ingress.port }}
            - --ingress-tls-port={{ $gw.ingress.tlsPort }}
            {{- with $gw.ingress.classes }}
            - --ingress-class={{ join "," . }}
            {{- end }}
            - --workload-name={{ $gw.name }}
            - --access-log={{ $gw.accessLog }}
            - --max-connections={{ $gw.limits.maxConnections }}
            - --max-connections-per-client={{ $gw.limits.maxConnectionsPerClient }}
            - --overload-memory={{ $gw.limits.overloadMemory }}
            - --tls-handshake-timeout={{ $gw.limits.tlsHandshakeTimeout }}
            - --request-header-timeout={{ $gw.limits.requestHeaderTimeout }}
            - --idle-timeout={{ $gw.limits.idleTimeout }}
            - --max-request-body={{ $gw.limits.maxRequestBody }}
            - --h2-max-concurrent-streams={{ $gw.limits.http2.maxConcurrentStreams }}
            - --h2-max-header-list={{ $gw.limits.http2.maxHeaderList }}
            - --cause-detail={{ $gw.causeDetail }}
            {{- range $gw.fullCauseCidrs }}
            - --full-cause-cidr={{ . }}
            {{- end }}
            {{- if $gw.proxyProtocol }}
            - --proxy-protocol
            {{- end }}
            {{- if $gw.trustedProxies }}
            - --trusted-proxies={{ $gw.trustedProxies }}
            {{- end }}
            {{- if $gw.tracing.endpoint }}
            - --tracing-endpoint={{ $gw.tracing.endpoint }}
            - --tracing-sampling={{ $gw.tracing.sampling }}
            {{- end }}
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - name: FERRY_LOG
              value: {{ $gw.logLevel | quote }}
          ports:
            - name: status
              containerPort: 15020
            {{- range $gw.service.ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
            {{- end }}
          readinessProbe:
            httpGet: {path: /healthz/ready, port: status}
            periodSeconds: 2
          livenessProbe:
            httpGet: {path: /healthz, port: status}
            periodSeconds: 10
          resources:
            {{- toYaml $gw.resources | nindent 12 }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          # The controller's roots and this pod's token (audience ferry) for the control channel.
          volumeMounts:
            - {name: ferry-ca-root, mountPath: /var/run/secrets/ferry, readOnly: true}
            - {name: ferry-token, mountPath: /var/run/secrets/tokens, readOnly: true}
      volumes:
        - name: ferry-ca-root
          configMap: {name: ferry-ca-root}
        - name: ferry-token
          projected:
            sources:
              - serviceAccountToken: {path: ferry-token, audience: ferry, expirationSeconds: 3600}
      {{- with $gw.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $gw.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $gw.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $gw.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferry.labels" $root | nindent 4 }}
    {{- toYaml $gw.labels | nindent 4 }}
    # The controller reads this Service's address into the Gateway's status.addresses.
    gateway.networking.k8s.io/gateway-name: {{ $gw.name }}
  {{- with $gw.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $gw.service.type }}
  {{- if $gw.service.loadBalancerIP }}
  loadBalancerIP: {{ $gw.service.loadBalancerIP }}
  {{- end }}
  {{- if $gw.service.externalTrafficPolicy }}
  externalTrafficPolicy: {{ $gw.service.externalTrafficPolicy }}
  {{- end }}
  selector:
    {{- toYaml $gw.labels | nindent 4 }}
  ports:
    {{- range $gw.service.ports }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .port }}
      {{- if and (eq $gw.service.type "NodePort") .nodePort }}
      nodePort: {{ .nodePort }}
      {{- end }}
    {{- end }}
{{- if $gw.gatewayAPI.create }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {{ $gw.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferry.labels" $root | nindent 4 }}
spec:
  gatewayClassName: {{ $root.Values.gatewayClass.name }}
  listeners:
    {{- toYaml $gw.gatewayAPI.listeners | nindent 4 }}
{{- end }}
{{- if $gw.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $gw.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferry.labels" $root | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $gw.name }}
  minReplicas: {{ $gw.autoscaling.minReplicas }}
  maxReplicas: {{ $gw.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $gw.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- if $gw.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $gw.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ferry.labels" $root | nindent 4 }}
spec:
  minAvailable: {{ $gw.podDisruptionBudget.minAvailable }}
  selector:
    matchLabels:
      {{- toYaml $gw.labels | nindent 6 }}
{{- end }}
{{- end }}
