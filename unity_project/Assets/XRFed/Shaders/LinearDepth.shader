// Linear eye depth in metres (distance along the camera's optical axis), written to an RFloat target by DepthSensor.
Shader "XRFed/LinearDepth"
{
    SubShader
    {
        Tags { "RenderType"="Opaque" }
        Pass
        {
            CGPROGRAM
            #pragma vertex vert
            #pragma fragment frag
            #include "UnityCG.cginc"
            struct v2f { float4 pos : SV_POSITION; float depth : TEXCOORD0; };
            v2f vert(appdata_base v)
            {
                v2f o;
                o.pos = UnityObjectToClipPos(v.vertex);
                o.depth = -UnityObjectToViewPos(v.vertex).z;
                return o;
            }
            float4 frag(v2f i) : SV_Target { return float4(i.depth, 0, 0, 1); }
            ENDCG
        }
    }
}
