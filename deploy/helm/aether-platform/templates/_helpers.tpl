{{- define "aether.name" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}

{{- define "aether.labels" -}}
app.kubernetes.io/name: aether-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The image of a colour: digest when pinned, else the colour's tag, else image.tag. */}}
{{- define "aether.image" -}}
{{- $root := index . 0 -}}{{- $color := index . 1 -}}
{{- $tag := (index $root.Values.colors $color).tag | default $root.Values.image.tag -}}
{{- if $root.Values.image.digest -}}{{ $root.Values.image.repository }}@{{ $root.Values.image.digest }}
{{- else -}}{{ $root.Values.image.repository }}:{{ $tag }}{{- end -}}
{{- end -}}

{{/* Items of the platform secret one component may read (as files under /var/run/aether/secrets). */}}
{{- define "aether.secretItems" -}}
{{- $component := . -}}
- {key: database-url, path: database-url}
{{- if not (has $component (list "migrate" "ops")) }}
- {key: redis-url, path: redis-url}
- {key: jwt-public-key, path: jwt-public-key}
{{- end }}
{{- if eq $component "accounts" }}
- {key: jwt-private-key, path: jwt-private-key}
{{- end }}
{{- if eq $component "reports" }}
- {key: audit-anchor-private-key, path: audit-anchor-private-key}
- {key: audit-anchor-public-key, path: audit-anchor-public-key}
{{- end }}
{{- if has $component (list "oms" "hedge" "risk") }}
- {key: {{ $component }}-client-secret, path: service-client-secret}
{{- end }}
{{- end -}}

{{- define "aether.secretEnv" -}}
{{- $component := . -}}
- {name: AETHER_DATABASE_URL_FILE, value: /var/run/aether/secrets/database-url}
{{- if not (has $component (list "migrate" "ops")) }}
- {name: AETHER_REDIS_URL_FILE, value: /var/run/aether/secrets/redis-url}
- {name: AETHER_JWT_PUBLIC_KEY_FILE, value: /var/run/aether/secrets/jwt-public-key}
{{- end }}
{{- if eq $component "accounts" }}
- {name: AETHER_JWT_PRIVATE_KEY_FILE, value: /var/run/aether/secrets/jwt-private-key}
{{- end }}
{{- if eq $component "reports" }}
- {name: AETHER_AUDIT_ANCHOR_PRIVATE_KEY_FILE, value: /var/run/aether/secrets/audit-anchor-private-key}
- {name: AETHER_AUDIT_ANCHOR_PUBLIC_KEY_FILE, value: /var/run/aether/secrets/audit-anchor-public-key}
{{- end }}
{{- if has $component (list "oms" "hedge" "risk") }}
- {name: AETHER_SERVICE_CLIENT_SECRET_FILE, value: /var/run/aether/secrets/service-client-secret}
{{- end }}
{{- end -}}

{{- define "aether.commonEnv" -}}
{{- range $name, $value := .Values.env }}
- {name: {{ $name }}, value: {{ $value | quote }}}
{{- end }}
- {name: AETHER_HOME, value: /tmp/aether}
- {name: HOME, value: /tmp}
{{- end -}}

{{/* Sha256 of the exchange accounts a pod mounts: a rotated key changes it and so rolls the pod. */}}
{{- define "aether.accountsChecksum" -}}
{{- toJson .Values.exchangeAccounts.accounts | sha256sum -}}
{{- end -}}

{{- define "aether.resources" -}}
{{- $root := index . 0 -}}{{- $own := index . 1 -}}
{{- toYaml (default $root.Values.defaultResources $own) -}}
{{- end -}}

{{/* The ML image (Dockerfile target `ml`): ml.image.repository (else image.repository) at ml.image.digest, else
ml.image.tag (required: the ML image is built and tagged apart from the services' image). */}}
{{- define "aether.mlImage" -}}
{{- $image := .Values.ml.image -}}
{{- $repository := $image.repository | default .Values.image.repository -}}
{{- if $image.digest -}}{{ $repository }}@{{ $image.digest }}
{{- else -}}{{ $repository }}:{{ required "ml.image.tag is required when ml.enabled (the tag of the Dockerfile's ml target)" $image.tag }}
{{- end -}}
{{- end -}}

{{/* One ML pod spec (the signal worker, the retraining CronJob, the HPO Job): the ML image, MLflow's settings
(tracking store: database aether_mlflow next to database-url; artifacts under ml.artifactRoot), the S3 credentials
when given, and the chart's restricted security context. Arguments: root, component, args or shell, resources,
restartPolicy, tmpSize. */}}
{{- define "aether.mlPodSpec" -}}
{{- $root := .root -}}
{{- $ml := $root.Values.ml -}}
serviceAccountName: {{ include "aether.name" $root }}-ml
restartPolicy: {{ .restartPolicy }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
containers:
  - name: {{ .component }}
    image: {{ include "aether.mlImage" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    {{- if .shell }}
    command: [/bin/sh, -c]
    args: [{{ .shell | quote }}]
    {{- else }}
    args: {{ toJson .args }}
    {{- end }}
    env:
      {{- include "aether.commonEnv" $root | nindent 6 }}
      {{- include "aether.secretEnv" .component | nindent 6 }}
      - {name: AETHER_ML_ARTIFACT_ROOT, value: {{ required "ml.artifactRoot is required when ml.enabled (s3://bucket/prefix for MLflow's artifacts)" $ml.artifactRoot | quote }}}
      - {name: AETHER_ML_EXPERIMENT, value: {{ $ml.experiment | quote }}}
      - {name: AETHER_ML_MODEL_NAME, value: {{ $ml.modelName | quote }}}
      {{- with $ml.s3.endpointUrl }}
      - {name: MLFLOW_S3_ENDPOINT_URL, value: {{ . | quote }}}
      {{- end }}
      {{- with $ml.s3.region }}
      - {name: AWS_DEFAULT_REGION, value: {{ . | quote }}}
      {{- end }}
      {{- if $ml.s3.existingSecret }}
      - {name: AWS_SHARED_CREDENTIALS_FILE, value: /var/run/aether/ml-s3/credentials}
      {{- end }}
    resources:
      {{- include "aether.resources" (list $root .resources) | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
      - {name: secrets, mountPath: /var/run/aether/secrets, readOnly: true}
      {{- if $ml.s3.existingSecret }}
      - {name: ml-s3, mountPath: /var/run/aether/ml-s3, readOnly: true}
      {{- end }}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: {{ .tmpSize }}}
  - name: secrets
    secret:
      secretName: {{ $root.Values.secrets.existingSecret }}
      defaultMode: 0440
      items:
        {{- include "aether.secretItems" .component | nindent 8 }}
  {{- if $ml.s3.existingSecret }}
  - name: ml-s3
    secret:
      secretName: {{ $ml.s3.existingSecret }}
      defaultMode: 0440
      items:
        - {key: credentials, path: credentials}
  {{- end }}
{{- end -}}

{{/* Labels of an ML pod: its component, its kind, and aether.io/ml (the S3 egress policy selects it). */}}
{{- define "aether.mlPodLabels" -}}
{{- $root := index . 0 -}}
{{ include "aether.labels" $root }}
app.kubernetes.io/component: {{ index . 1 }}
aether.io/kind: {{ index . 2 }}
aether.io/ml: "true"
{{- end -}}

{{/* The training data options of `aether ml retrain|hpo` (ml.data). */}}
{{- define "aether.mlDataArgs" -}}
{{- $data := .Values.ml.data -}}
{{- toJson (list "--trainer" $data.trainer "--venue" $data.venue "--symbol" $data.symbol "--features" $data.features "--label" $data.label) -}}
{{- end -}}
